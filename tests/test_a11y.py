"""The accessibility scan: axe-core in a real Chromium finds no WCAG 2.x A or AA violation
(contrast included) on any page, in light and dark schemes, at desktop and phone sizes."""

from typing import Awaitable, Callable

import pytest
from playwright.async_api import Browser, Page

from tests.axe import violations
from tests.browser import chromium, wait_connected

pytestmark = pytest.mark.browser

SCHEMES = ["light", "dark"]
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
WAIT = 10_000


async def echo_with_a_reply(page: Page, tag: str) -> None:
    """The echo page with one message sent and echoed."""
    await wait_connected(page)
    await page.fill("#echo-input", f"hello from {tag}")
    await page.press("#echo-input", "Enter")
    await page.locator("#echo-log .entry").nth(1).wait_for(timeout=WAIT)


async def chat_with_messages(page: Page, tag: str) -> None:
    """The chat page as a joined user: public (with a link) and private messages, a presence
    notice, the online list with a name to click, and a private recipient chosen."""
    await wait_connected(page)
    await page.locator("#chat-online .name.me").wait_for(state="attached", timeout=WAIT)
    await page.fill("#chat-text", "hello everyone, see https://example.com/docs")
    await page.press("#chat-text", "Enter")
    await page.locator("#chat-log .entry.mine a", has_text="example.com").wait_for(timeout=WAIT)
    drawer = page.locator("#chat-people-toggle")
    if await drawer.is_visible():  # a phone: the online list is a drawer
        await drawer.click()
    await page.locator("#chat-online .name", has_text="bob").click()
    await page.fill("#chat-text", "just for bob")
    await page.press("#chat-text", "Enter")
    await page.locator("#chat-log .entry.private", has_text="just for bob").wait_for(timeout=WAIT)


async def poll_with_a_vote(page: Page, tag: str) -> None:
    """The demo poll with a vote cast, so bars, a leader and the note are shown."""
    await wait_connected(page)
    before = await page.locator("#poll-total").text_content()
    await page.locator('#poll-options li[data-option="1"] button').click()
    await page.wait_for_function(
        "before => document.getElementById('poll-total').textContent !== before", arg=before,
        timeout=WAIT)


async def models_with_a_batch(page: Page, tag: str) -> None:
    """The models page with every panel connected and a batch of ten shown in each."""
    for model in ["short", "long", "sse", "ws"]:
        await page.wait_for_selector(
            f'#model-{model} .model-state[data-state="open"]', timeout=WAIT)
    await page.click("#models-send")
    await page.locator("#models-status", has_text="All 10 messages shown everywhere").wait_for(
        timeout=WAIT)


async def counter_pressed(page: Page, tag: str) -> None:
    """The counter page connected, pressed once."""
    await wait_connected(page)
    await page.locator("#counter-value", has_text="0").wait_for(timeout=WAIT)
    await page.click("#counter-increment")
    await page.locator("#counter-value", has_text="1").wait_for(timeout=WAIT)


async def as_loaded(page: Page, tag: str) -> None:
    """The page as it loads."""


# Each page, brought to a state that shows what it can show.
PAGES: dict[str, tuple[str, Callable[[Page, str], Awaitable[None]]]] = {
    "home": ("/", as_loaded),
    "echo": ("/echo", echo_with_a_reply),
    "chat": ("/chat?room=a11y&nick={tag}", chat_with_messages),
    "models": ("/models?room=a11y-{tag}", models_with_a_batch),
    "vote": ("/vote", as_loaded),
    "poll": ("/vote/demo", poll_with_a_vote),
    "present": ("/vote/demo/present", as_loaded),
    "join-error": ("/j/ZZZZZZ", as_loaded),
    "counter": ("/counter?name=a11y-{tag}", counter_pressed),
    "not-found": ("/no/such/page", as_loaded),
}


async def bob_in_the_chat(browser: Browser, url: str) -> Page:
    """Another person in room a11y, with one message of theirs in the history."""
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{url}/chat?room=a11y&nick=bob")
    await wait_connected(page)
    await page.fill("#chat-text", "hi, bob here")
    await page.press("#chat-text", "Enter")
    await page.locator("#chat-log .entry.mine").wait_for(timeout=WAIT)
    return page


@pytest.mark.parametrize("name", PAGES)
async def test_page_has_no_accessibility_violation(http_server_client, name):
    """axe-core finds no WCAG A/AA violation on the page in any scheme at any size."""
    path, prepare = PAGES[name]
    base = http_server_client.get_url("").rstrip("/")
    found: dict[str, list[str]] = {}
    async with chromium() as browser:
        if name == "chat":
            await bob_in_the_chat(browser, base)
        for scheme in SCHEMES:
            for size, viewport in SIZES.items():
                tag = f"{scheme}-{size}"
                context = await browser.new_context(viewport=viewport, color_scheme=scheme)
                page = await context.new_page()
                await page.goto(base + path.format(tag=tag))
                await prepare(page, tag)
                found[tag] = await violations(page)
                await context.close()
    failing = {tag: lines for tag, lines in found.items() if lines}
    assert not failing, "\n".join(
        f"{tag}: {line}" for tag, lines in failing.items() for line in lines)


# axe-core checks text contrast only; WCAG 1.4.11 (non-text contrast, 3:1) is measured here
# from the computed styles: a colour against the first opaque background behind it.
MEASURE = """([selector, property, against]) => {
  const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
  const channel = (c) => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const behind = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const color = rgb(getComputedStyle(n).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  const node = document.querySelector(selector);
  const style = getComputedStyle(node);
  // "edge": what outlines the element, its border if it has one, else its own fill.
  const color = property !== "edge" ? style[property]
    : style.borderTopStyle !== "none" && parseFloat(style.borderTopWidth) > 0
      ? style.borderTopColor : style.backgroundColor;
  const [hi, lo] = [lum(rgb(color)),
                    lum(behind(against === "self" ? node : node.parentElement))]
    .sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}"""


async def contrast(page: Page, selector: str, css_property: str, against: str) -> float:
    """The contrast of ``selector``'s ``css_property`` colour (or ``"edge"``: its border, else
    its fill) with the background behind the element (``against="self"``) or behind its
    parent (``"parent"``)."""
    return await page.evaluate(MEASURE, [selector, css_property, against])


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_controls_and_focus_stand_out_at_3_to_1(http_server_client, scheme):
    """Input borders, empty bar tracks, focus rings and disabled button text reach 3:1."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        for viewport in SIZES.values():
            page = await browser.new_page(viewport=viewport, color_scheme=scheme)
            await page.goto(base + "/vote")
            measured = {
                "text input border": await contrast(page, "#new-title", "edge", "parent"),
                "option input border": await contrast(
                    page, "#new-options input", "edge", "parent"),
            }
            await page.focus("#new-title")
            measured["focus ring"] = await contrast(page, "#new-title", "outlineColor", "parent")
            await page.locator("#new-create").evaluate("button => { button.disabled = true; }")
            measured["disabled button text"] = await contrast(
                page, "#new-create", "color", "self")

            await page.goto(base + "/vote/demo")
            await page.locator("#poll-options .bar-track").first.wait_for(timeout=WAIT)
            measured["bar track"] = await contrast(
                page, "#poll-options .bar-track", "edge", "parent")
            await page.goto(base + "/chat")
            measured["textarea border"] = await contrast(page, "#chat-text", "edge", "parent")
            await page.close()
            weak = {what: round(ratio, 2) for what, ratio in measured.items() if ratio < 3}
            assert not weak, f"{scheme} {viewport}: below 3:1: {weak}"
