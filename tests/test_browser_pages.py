"""The shared page frame in a real headless Chromium: the nav, the home cards, dark mode,
and HEAD, at desktop and phone sizes."""

import pytest

from tests.browser import chromium, collect_console_errors

pytestmark = pytest.mark.browser

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
# The body's background in each scheme: site.css's --bg.
BACKGROUND = {"light": "rgb(247, 247, 249)", "dark": "rgb(21, 23, 26)"}


@pytest.mark.parametrize("size", SIZES)
async def test_nav_marks_the_current_page_visibly(http_server_client, size):
    """The link to the page shown has aria-current="page", is in view and looks different."""
    async with chromium() as browser:
        page = await browser.new_page(viewport=SIZES[size])
        for path, label in [("/echo", "Echo"), ("/chat", "Chat"), ("/vote", "Vote")]:
            await page.goto(http_server_client.get_url(path))
            current = page.locator('.site-header nav a[aria-current="page"]')
            assert await current.count() == 1
            assert await current.text_content() == label
            assert await current.is_visible()
            other = page.locator(".site-header nav a:not([aria-current])").first
            style = "a => [getComputedStyle(a).fontWeight, getComputedStyle(a).textDecorationLine]"
            assert await current.evaluate(style) == ["700", "underline"]
            assert await other.evaluate(style) == ["400", "none"]

        await page.goto(http_server_client.get_url("/vote/demo"))
        section = page.locator('.site-header nav a[aria-current="true"]')
        assert await section.text_content() == "Vote"
        assert await section.evaluate("a => getComputedStyle(a).fontWeight") == "700"


@pytest.mark.parametrize("size", SIZES)
async def test_whole_card_on_the_home_page_is_a_link(http_server_client, size):
    """A click on a card's description opens its demo; the focused card shows a ring."""
    async with chromium() as browser:
        page = await browser.new_page(viewport=SIZES[size])
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url("/"))
        # A real mouse click where the description is drawn: the stretched link is on top.
        box = await page.locator(".card p", has_text="Rooms, nicknames").bounding_box()
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.wait_for_url("**/chat")

        await page.goto(http_server_client.get_url("/"))
        link = page.locator(".card a", has_text="Vote")
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await link.evaluate("a => a === document.activeElement"):
                break
        ring = await page.locator(".card", has=page.locator("a", has_text="Vote")).evaluate(
            "card => [getComputedStyle(card).outlineStyle, getComputedStyle(card).outlineWidth]")
        assert ring == ["solid", "3px"]
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/vote")
        assert errors == []


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_colour_scheme_follows_the_system(http_server_client, scheme, size):
    """With prefers-color-scheme emulated, pages, cards and inputs take that scheme's colours."""
    async with chromium() as browser:
        page = await browser.new_page(viewport=SIZES[size], color_scheme=scheme)
        await page.goto(http_server_client.get_url("/vote"))
        body = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert body == BACKGROUND[scheme]
        assert await page.evaluate(
            "getComputedStyle(document.documentElement).colorScheme") == "light dark"
        card = await page.locator(".panel").first.evaluate(
            "p => getComputedStyle(p).backgroundColor")
        field = await page.locator("#new-title").evaluate("i => getComputedStyle(i).color")
        dark_card, light_text = card == "rgb(31, 34, 38)", field == "rgb(232, 234, 237)"
        assert (dark_card, light_text) == ((True, True) if scheme == "dark" else (False, False))


async def test_head_is_answered_where_get_is(http_server_client):
    """The browser's fetch() with HEAD gets 200 and no body on each page, 404 elsewhere."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/"))
        answers = await page.evaluate("""async (paths) => Promise.all(paths.map(async (path) => {
            const response = await fetch(path, { method: "HEAD" });
            return [path, response.status, (await response.text()).length];
        }))""", ["/", "/echo", "/chat", "/vote", "/vote/demo", "/healthz", "/no/such/page"])
        assert answers == [
            ["/", 200, 0], ["/echo", 200, 0], ["/chat", 200, 0], ["/vote", 200, 0],
            ["/vote/demo", 200, 0], ["/healthz", 200, 0], ["/no/such/page", 404, 0],
        ]
