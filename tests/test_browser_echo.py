"""The echo page in a real headless Chromium."""

import pytest

from realtime.pubsub.delivery import CloseReason
from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser


async def test_typed_message_comes_back_on_the_page(http_server_client):
    """A person types on /echo, presses Enter, and sees the echo as text."""
    async with chromium() as browser:
        page = await browser.new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url("/echo"))
        await wait_connected(page)

        await page.fill("#echo-input", "hello <b>world</b>")
        await page.press("#echo-input", "Enter")

        echoed = page.locator(".entry.received .text")
        await echoed.first.wait_for(timeout=10_000)
        assert await echoed.first.text_content() == "hello <b>world</b>"
        assert await page.locator(".entry.received b").count() == 0
        assert errors == []


async def test_binary_message_comes_back_on_the_page(http_server_client):
    """With "binary" ticked the text goes out as a binary frame and comes back marked so."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/echo"))
        await wait_connected(page)

        await page.check("#echo-binary")
        await page.fill("#echo-input", "bytes ü")
        await page.click("#echo-send")

        received = page.locator(".entry.received")
        await received.first.wait_for(timeout=10_000)
        assert await received.first.locator(".tag").text_content() == "binary"
        assert await received.first.locator(".text").text_content() == "bytes ü"


async def test_page_reconnects_after_the_server_drops_it(http_server_client, hub):
    """When the server closes every socket the page shows it and reconnects by itself."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/echo"))
        await wait_connected(page)

        hub.close_all(CloseReason.SHUTDOWN)
        await page.wait_for_selector('#conn-state:not([data-state="open"])', timeout=10_000)
        await wait_connected(page)

        await page.fill("#echo-input", "after reconnect")
        await page.press("#echo-input", "Enter")
        echoed = page.locator(".entry.received .text", has_text="after reconnect")
        await echoed.wait_for(timeout=10_000)
