"""static/js/share.js in a real headless Chromium: a share link that works on a phone."""

import pytest

from tests.browser import chromium, collect_console_errors

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

# The poll page's link and button, wired to share.js afresh (a clone of the button drops
# whatever listener the page's own script gave it).
WIRE = """async ({ status }) => {
  const { shareLink } = await import("/static/js/share.js");
  const old = document.getElementById("share-copy");
  const button = old.cloneNode(true);
  old.replaceWith(button);
  const out = status ? document.getElementById("poll-note") : undefined;
  shareLink({ input: document.getElementById("share-link"), button, status: out });
  return button.textContent;
}"""


async def open_poll(browser, options, init_script=None):
    context = await browser.new_context(**options)
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    errors = collect_console_errors(page)
    return context, page, errors


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_refused_clipboard_selects_the_link_and_says_copy_it(http_server_client, size):
    """Without the Clipboard API the link is selected and the page says "Copy the link"."""
    no_clipboard = "Object.defineProperty(navigator, 'clipboard', { value: undefined });"
    async with chromium() as browser:
        options = DESKTOP if size == "desktop" else PHONE
        _, page, errors = await open_poll(browser, options, no_clipboard)
        await page.goto(http_server_client.get_url("/vote/demo"))
        assert await page.evaluate(WIRE, {"status": False}) == "Copy"
        await page.click("#share-copy")
        status = page.locator(".share-status")
        await status.filter(has_text="Copy the link").wait_for()
        selected = await page.locator("#share-link").evaluate(
            "i => [document.activeElement === i, i.selectionStart, i.selectionEnd, i.value]")
        assert selected[:3] == [True, 0, len(selected[3])]
        assert selected[3].endswith("/vote/demo")
        assert "Ctrl" not in await page.locator("body").inner_text()
        assert errors == []


async def test_clipboard_copies_the_link_on_a_desktop(http_server_client):
    """With the Clipboard API the link is copied and the status says so."""
    async with chromium() as browser:
        context, page, errors = await open_poll(browser, DESKTOP)
        await context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.goto(http_server_client.get_url("/vote/demo"))
        await page.evaluate(WIRE, {"status": True})
        await page.click("#share-copy")
        await page.locator("#poll-note", has_text="Link copied.").wait_for()
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied == await page.locator("#share-link").input_value()
        assert errors == []


async def test_phone_with_a_share_sheet_shares_the_link(http_server_client):
    """On a touch device with navigator.share the button says Share and hands over the URL."""
    fake_sheet = """
      window.shared = [];
      navigator.share = async (data) => { window.shared.push(data); };
    """
    async with chromium() as browser:
        _, page, errors = await open_poll(browser, PHONE, fake_sheet)
        await page.goto(http_server_client.get_url("/vote/demo"))
        assert await page.evaluate(WIRE, {"status": False}) == "Share"
        await page.click("#share-copy")
        await page.wait_for_function("window.shared.length === 1")
        shared = await page.evaluate("window.shared[0]")
        assert shared["url"] == await page.locator("#share-link").input_value()
        assert errors == []
