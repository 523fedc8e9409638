"""The chat page's layout and message text in a real headless Chromium, at 1280x720,
1280x800 and 390x844, light and dark: the composer is always on screen, long messages use
the width, and addresses are links that cannot carry HTML."""

import pytest
from playwright.async_api import Page

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

WAIT = 10_000
SIZES = [(1280, 720), (1280, 800), (390, 844)]
SCHEMES = ["light", "dark"]
LONG = "A long message that should take the width the log has to give it. " * 8


async def open_page(browser, url: str, size: tuple[int, int], scheme: str, room: str,
                    nick: str = "ana") -> Page:
    """The chat page at ``size`` in ``scheme``, connected, in ``room`` as ``nick``."""
    width, height = size
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        color_scheme=scheme)
    page = await context.new_page()
    page.errors = collect_console_errors(page)
    await page.goto(f"{url}?room={room}&nick={nick}")
    await wait_connected(page)
    return page


async def say(page: Page, text: str) -> None:
    """Send ``text`` and wait for it back in the log."""
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")
    await page.locator("#chat-log .entry.mine .text", has_text=text[:40]).last.wait_for(
        timeout=WAIT)


async def show_notice(browser, url: str, page: Page, room: str) -> None:
    """A real notice: the page asks for a nickname someone else in the room holds (on a
    phone, the nickname field is behind its button)."""
    other = await open_page(browser, url, (1280, 800), "light", room, nick="bob")
    await page.locator("#chat-online .name", has_text="bob").wait_for(
        state="attached", timeout=WAIT)
    toggle = page.locator("#chat-join-toggle")
    if await toggle.is_visible():
        await toggle.click()
    await page.fill("#chat-nick", "bob")
    await page.locator("#chat-enter").click()
    await page.locator("#chat-notice", has_text="is taken").wait_for(timeout=WAIT)
    await other.context.close()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
async def test_the_composer_is_on_screen_with_a_notice_and_a_full_log(
        http_server_client, size, scheme):
    """With the log overflowing and a notice shown, the message box and Send button lie
    inside the viewport and the page itself does not scroll."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        room = f"fit-{size[0]}x{size[1]}-{scheme}"
        page = await open_page(browser, url, size, scheme, room)
        for n in range(6):
            await say(page, f"{n} {LONG}")
        await show_notice(browser, url, page, room)
        for selector in ("#chat-text", "#chat-send", "#chat-notice"):
            box = await page.locator(selector).bounding_box()
            assert box is not None, selector
            assert box["y"] >= 0 and box["y"] + box["height"] <= size[1], (selector, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= size[0], (selector, box)
        scroll = await page.evaluate(
            "[document.documentElement.scrollHeight, window.innerHeight]")
        assert scroll[0] <= scroll[1]
        assert page.errors == []


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
async def test_a_long_message_uses_the_width_of_the_log(http_server_client, size):
    """A long message's text is wider than two thirds of the log, not a narrow column."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        page = await open_page(browser, url, size, "light", f"wide-{size[0]}x{size[1]}")
        await say(page, LONG)
        text = await page.locator("#chat-log .entry.mine .text").last.bounding_box()
        log = await page.locator("#chat-log").bounding_box()
        assert text is not None and log is not None
        assert text["width"] > 2 / 3 * log["width"], (text, log)


async def test_an_address_is_a_link_that_opens_in_a_new_tab(http_server_client):
    """An http(s) address in a message is a link (new tab, rel noopener noreferrer
    nofollow), without the full stop after it, and clicking it opens that page."""
    url = http_server_client.get_url("/chat")
    target = http_server_client.get_url("/echo")
    async with chromium() as browser:
        page = await open_page(browser, url, (1280, 800), "light", "links")
        await say(page, f"the echo page is at {target}. try it")
        link = page.locator("#chat-log .entry .text a")
        assert await link.count() == 1
        assert await link.get_attribute("href") == target
        assert await link.text_content() == target
        assert await link.get_attribute("target") == "_blank"
        assert await link.get_attribute("rel") == "noopener noreferrer nofollow"
        text = await page.locator("#chat-log .entry .text").last.text_content()
        assert text == f"the echo page is at {target}. try it"
        async with page.context.expect_page() as opened:
            await link.click()
        echo = await opened.value
        await echo.wait_for_load_state()
        assert echo.url == target
        assert page.errors == []


async def test_markup_in_a_message_stays_text(http_server_client):
    """HTML and a javascript: address in a message are shown as typed: no element, no
    script, no link but the one http address."""
    url = http_server_client.get_url("/chat")
    hostile = ('<img src=x onerror="window.pwned=1"> <a href="javascript:window.pwned=2">x</a> '
               'javascript:window.pwned=3 https://example.com/"><b>bold</b>')
    async with chromium() as browser:
        page = await open_page(browser, url, (1280, 800), "dark", "markup")
        await say(page, hostile)
        text = page.locator("#chat-log .entry .text").last
        assert await text.text_content() == hostile
        assert await text.locator("img, b, script").count() == 0
        links = text.locator("a")
        assert await links.count() == 1
        assert await links.get_attribute("href") == "https://example.com/"
        assert await page.evaluate("window.pwned === undefined")
