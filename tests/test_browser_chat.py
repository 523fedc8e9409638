"""The chat page in a real headless Chromium: people in separate browsers talking."""

import pytest

from realtime.wire.closecodes import CloseCode
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
            if getattr(connection, "nick", None) == "bob":
                connection.close(1001, "restart")
        await bob.wait_for_selector('#conn-state:not([data-state="open"])', timeout=10_000)
        await say(alice, "while bob was away")
        await wait_connected(bob)

        await bob.locator("#chat-log .entry.msg", has_text="while bob was away").wait_for(
            timeout=10_000)
        assert await bob.locator("#chat-log .entry.msg", has_text="before the drop").count() == 1


def socket_of(hub, nick, other_than=None):
    """The server-side chat connection holding ``nick``, other than ``other_than``."""
    return next(connection for connection in hub.connections
                if connection is not other_than and getattr(connection, "nick", None) == nick)


async def test_private_draft_stays_private_when_its_recipient_leaves(http_server_client):
    """Alice writes to Bob, Bob closes his tab, Alice presses Enter: the draft is not sent to
    the room; Alice sees no_such_user and her composer is still addressed to Bob."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, alice_errors = await open_chat(browser, url, "alice")
        bob, _ = await open_chat(browser, url, "bob")
        carol, _ = await open_chat(browser, url, "carol")

        await alice.locator("#chat-online .name", has_text="bob").click()
        await alice.fill("#chat-text", "the secret plan")
        await bob.context.close()
        await alice.locator("#chat-log .event", has_text="bob left").wait_for(timeout=10_000)
        assert await alice.locator("#chat-to-name").text_content() == "bob"
        assert await alice.locator("#chat-to-away").is_visible()

        await alice.press("#chat-text", "Enter")
        notice = alice.locator("#chat-notice", has_text="Nobody called bob")
        await notice.wait_for(timeout=10_000)
        assert await alice.locator("#chat-to").is_visible()
        assert await alice.input_value("#chat-text") == "the secret plan"

        await say(carol, "marker")  # the room delivers in order: the secret would be first
        await carol.locator("#chat-log .entry.msg", has_text="marker").wait_for(timeout=10_000)
        assert await carol.locator("#chat-log", has_text="the secret plan").count() == 0
        assert alice_errors == []


async def test_page_closed_with_1008_reconnects_without_since(http_server_client, hub):
    """A socket closed with 1008 (e.g. a welcome too big to take) is not retried with the
    same ?since=: the page asks for the newest history and says messages may be missing."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice, _ = await open_chat(browser, url, "alice")
        await say(alice, "first")
        await alice.locator("#chat-log .entry.msg", has_text="first").wait_for(timeout=10_000)

        dropped = socket_of(hub, "alice")
        dropped.close(CloseCode.POLICY_VIOLATION, "slow consumer")
        await alice.wait_for_selector('#conn-state:not([data-state="open"])', timeout=10_000)
        await alice.locator("#chat-log .event.warn", has_text="may be missing").wait_for(
            timeout=10_000)

        again = socket_of(hub, "alice", other_than=dropped)
        assert "since" not in again.request.query_arguments
        assert await alice.locator("#chat-log .entry.msg", has_text="first").count() == 1
