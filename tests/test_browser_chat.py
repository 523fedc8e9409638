"""The chat page in a real headless Chromium: people in separate browsers talking."""

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser


async def open_chat(browser, url, nick):
    """A person in their own browser context (own cookies) on the chat page as ``nick``."""
    context = await browser.new_context()
    page = await context.new_page()
    errors = collect_console_errors(page)
    await page.goto(f"{url}?room=browsers&nick={nick}")
    await wait_connected(page)
    await page.locator("#chat-online .name.me").wait_for(timeout=10_000)
    return page, errors


async def say(page, text):
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")


async def test_message_typed_in_one_page_appears_in_the_other(http_server_client):
    """Alice types a message; Bob's page shows it with her name, as text."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, alice_errors = await open_chat(browser, url, "alice")
        bob, bob_errors = await open_chat(browser, url, "bob")

        await say(alice, "hi bob <b>bold?</b>")

        line = bob.locator("#chat-log .entry.msg", has_text="hi bob")
        await line.wait_for(timeout=10_000)
        assert await line.locator(".who").text_content() == "alice"
        assert await line.locator(".text").text_content() == "hi bob <b>bold?</b>"
        assert await bob.locator("#chat-log b").count() == 0
        assert alice_errors == [] and bob_errors == []


async def test_private_message_appears_only_for_its_recipient(http_server_client):
    """Alice clicks Bob's name and writes privately: Bob sees it marked, Carol never does."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, _ = await open_chat(browser, url, "alice")
        bob, _ = await open_chat(browser, url, "bob")
        carol, _ = await open_chat(browser, url, "carol")

        await alice.locator("#chat-online .name", has_text="bob").click()
        await say(alice, "just for bob")
        await bob.locator("#chat-log .entry.private", has_text="just for bob").wait_for(
            timeout=10_000)

        await alice.click("#chat-to-clear")
        await say(alice, "for everyone")
        await carol.locator("#chat-log .entry.msg", has_text="for everyone").wait_for(
            timeout=10_000)
        assert await carol.locator("#chat-log", has_text="just for bob").count() == 0
        assert await alice.locator("#chat-log .entry.private", has_text="just for bob").count() == 1


async def test_online_list_shows_who_is_here(http_server_client):
    """Each page lists the nicknames in the room and updates when someone arrives."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, _ = await open_chat(browser, url, "alice")
        await open_chat(browser, url, "bob")
        await alice.locator("#chat-online .name", has_text="bob").wait_for(timeout=10_000)
        assert await alice.locator("#chat-online .name").count() == 2


async def test_messages_sent_while_away_appear_after_reconnect(http_server_client, hub):
    """After the server drops every socket, the page reconnects and shows what it missed."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, _ = await open_chat(browser, url, "alice")
        bob, _ = await open_chat(browser, url, "bob")
        await say(alice, "before the drop")
        await bob.locator("#chat-log .entry.msg", has_text="before the drop").wait_for(
            timeout=10_000)

        for connection in hub.connections:
            if connection.room is not None and connection.room.nick(connection) == "bob":
                connection.close(1001, "restart")
        await bob.wait_for_selector('#conn-state:not([data-state="open"])', timeout=10_000)
        await say(alice, "while bob was away")
        await wait_connected(bob)

        await bob.locator("#chat-log .entry.msg", has_text="while bob was away").wait_for(
            timeout=10_000)
        assert await bob.locator("#chat-log .entry.msg", has_text="before the drop").count() == 1
