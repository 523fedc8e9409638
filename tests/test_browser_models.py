"""The /models page in a real headless Chromium: short polling, long-polling, Server-Sent
Events and a WebSocket on one room, side by side, counting requests, bytes and delays."""

import pytest

from tests.browser import chromium, collect_console_errors

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT = 15_000  # ms: short polling alone takes up to a second per message
MODELS = ["short", "long", "sse", "ws"]


async def open_models(browser, url, room, viewport=DESKTOP, clock=False):
    """The /models page on ``room`` with every panel connected."""
    page = await browser.new_page(viewport=viewport)
    page.errors = collect_console_errors(page)
    if clock:
        await page.clock.install()
    await page.goto(f"{url}?room={room}")
    for model in MODELS:
        await page.wait_for_selector(
            f'#model-{model} .model-state[data-state="open"]', timeout=WAIT)
    return page


async def stat(page, model, name):
    """The text of one of a panel's counters."""
    return await page.locator(f'#model-{model} [data-stat="{name}"]').text_content()


async def send_batch(page):
    """Press "send 10 messages" and wait until every panel shows all ten."""
    await page.click("#models-send")
    for model in MODELS:
        await page.locator(f"#model-{model} .model-log .entry", has_text="10 of 10").wait_for(
            timeout=WAIT)


async def test_ten_messages_reach_every_panel_with_their_delays(http_server_client):
    """After "send 10 messages" each panel lists the ten, each with its delay, and its
    delay counters show numbers."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "ten")
        await send_batch(page)
        for model in MODELS:
            entries = page.locator(f"#model-{model} .model-log .entry")
            assert await entries.count() == 10
            assert [await entries.nth(n).locator(".text").text_content() for n in range(10)] == [
                f"{n} of 10" for n in range(1, 11)]
            assert (await entries.nth(9).locator(".delay").text_content()).endswith("ms")
            assert (await stat(page, model, "delay")).endswith("ms")
            assert (await stat(page, model, "median")).endswith("ms")
        await page.locator("#models-status", has_text="All 10 messages shown everywhere").wait_for(
            timeout=WAIT)
        assert page.errors == []


async def test_pollers_make_many_requests_long_connections_one(http_server_client):
    """While a batch goes through, the pollers' request counters rise, and Server-Sent Events
    and the WebSocket stay at their one request, their bytes rising all the same."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "requests")
        before = {model: int(await stat(page, model, "requests")) for model in MODELS}
        await send_batch(page)
        after = {model: int(await stat(page, model, "requests")) for model in MODELS}
        assert after["short"] > before["short"]
        assert after["long"] > before["long"]
        assert after["sse"] == before["sse"] == 1
        assert after["ws"] == before["ws"] == 1
        for model in MODELS:
            assert await stat(page, model, "bytes") != "0 B"


async def test_nothing_polls_while_the_tab_is_hidden(http_server_client):
    """Hidden, every panel says paused and no request goes out however long it stays so;
    shown again, every panel reconnects."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "hidden", clock=True)
        await set_hidden(page, True)
        for model in MODELS:
            await page.wait_for_selector(
                f'#model-{model} .model-state[data-state="paused"]', timeout=WAIT)
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        await page.clock.run_for(30_000)  # thirty short polls' worth of timers
        assert requests == []

        await set_hidden(page, False)
        for model in MODELS:
            await page.wait_for_selector(
                f'#model-{model} .model-state[data-state="open"]', timeout=WAIT)
        assert requests


async def set_hidden(page, hidden):
    """Make the page believe its tab went to the background (or came back)."""
    await page.evaluate("""(hidden) => {
        Object.defineProperty(document, "visibilityState",
                              {configurable: true, get: () => hidden ? "hidden" : "visible"});
        Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_panels_side_by_side_on_a_desktop_stacked_on_a_phone(http_server_client,
                                                                   viewport):
    """At 1280 px the four panels share one row; at 390 px they stand one under the other,
    and nothing is wider than the screen."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "layout", viewport=viewport)
        boxes = [await page.locator(f"#model-{model}").bounding_box() for model in MODELS]
        tops = {round(box["y"]) for box in boxes}
        lefts = {round(box["x"]) for box in boxes}
        if viewport is DESKTOP:
            assert len(tops) == 1 and len(lefts) == 4
        else:
            assert len(tops) == 4 and len(lefts) == 1
            assert all(box["x"] + box["width"] <= viewport["width"] for box in boxes)
        assert await page.evaluate(
            "document.documentElement.scrollWidth") <= viewport["width"]
        assert page.errors == []
