"""The vote pages in a real headless Chromium."""

import pytest

from realtime.closecodes import CloseCode
from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser


def option(page, option_id: str):
    return page.locator(f'#poll-options li[data-option="{option_id}"]')


async def test_click_in_one_page_moves_the_bar_in_another(http_server_client):
    """Two browsers on one poll: a click in the first changes the count and bar in the second."""
    async with chromium() as browser:
        pages = [await (await browser.new_context()).new_page() for _ in range(2)]
        errors = [collect_console_errors(page) for page in pages]
        for page in pages:
            await page.goto(http_server_client.get_url("/vote/demo"))
            await wait_connected(page)
        watcher_bar = option(pages[1], "2").locator(".bar")
        assert await watcher_bar.evaluate("bar => bar.style.width") == "0%"

        await option(pages[0], "2").locator("button").click()

        await pages[1].wait_for_selector('#poll-options li[data-option="2"][data-votes="1"]')
        assert await option(pages[1], "2").locator(".count").text_content() == "1"
        assert await option(pages[1], "2").locator(".percent").text_content() == "100%"
        assert await watcher_bar.evaluate("bar => bar.style.width") == "100%"
        assert await pages[1].locator("#poll-total").text_content() == "1"
        assert errors == [[], []]


async def test_created_poll_opens_and_counts_one_vote_per_browser(http_server_client):
    """A poll made with the form opens; after one vote the buttons lock, also after reload."""
    async with chromium() as browser:
        page = await browser.new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-title", "Tea or <b>coffee</b>?")
        await page.fill("#new-options", "Tea\nCoffee\n\n")
        await page.check("#new-one-vote")
        await page.click("#new-create")
        await page.wait_for_url("**/vote/*")
        await wait_connected(page)
        assert await page.locator("h1").text_content() == "Tea or <b>coffee</b>?"

        await option(page, "1").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="1"].chosen')
        assert await page.locator("#poll-options button:enabled").count() == 0

        await page.reload()
        await wait_connected(page)
        await page.wait_for_selector('#poll-options li[data-option="1"].chosen[data-votes="1"]')
        assert "You voted for Tea" in await page.locator("#poll-note").text_content()
        assert errors == []


async def test_form_shows_the_servers_refusal(http_server_client):
    """A poll with one option is refused and the page says why."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-title", "Lonely")
        await page.fill("#new-options", "only one")
        await page.click("#new-create")
        error = page.locator("#new-error")
        await error.wait_for(state="visible")
        assert "options" in await error.text_content()


async def test_page_reconnects_with_a_fresh_snapshot(http_server_client, hub):
    """After the server drops the socket the page reconnects and still counts right."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/vote/demo"))
        await wait_connected(page)
        await option(page, "3").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="1"]')

        hub.close_all(CloseCode.GOING_AWAY, "restart")
        await page.wait_for_selector('#conn-state:not([data-state="open"])')
        await wait_connected(page)
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="1"]')
        await option(page, "3").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="2"]')
