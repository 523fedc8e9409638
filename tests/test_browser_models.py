"""The /models page in a real headless Chromium: short polling, long-polling, Server-Sent
Events and a WebSocket on one room, side by side, counting requests, bytes and delays; a
room per visitor, added latency, the summary table."""

import pytest

from tests.browser import chromium, collect_console_errors

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT = 15_000  # ms: short polling alone takes up to a second per message
MODELS = ["short", "long", "sse", "ws"]


async def open_models(browser, url, room, viewport=DESKTOP, clock=False):
    """The /models page on the shared room ``room`` (None: its own) with every panel
    connected."""
    page = await browser.new_page(viewport=viewport)
    page.errors = collect_console_errors(page)
    if clock:
        await page.clock.install()
    await page.goto(url if room is None else f"{url}?room={room}")
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


async def room_of(page):
    """The chat room a /models page follows, as its link to /chat names it."""
    return await page.locator("#models-room").text_content()


async def test_each_visitor_gets_a_room_of_their_own(http_server_client):
    """Two browsers opening /models follow two rooms, and one's batch never shows in the
    other's panels."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        first = await open_models(browser, url, room=None)
        second = await open_models(browser, url, room=None)
        assert await room_of(first) != await room_of(second)
        assert (await room_of(first)).startswith("models-")
        await send_batch(first)
        await send_batch(second)
        # In one room, the first batch would have reached the second page before its own.
        assert await second.locator("#model-ws .model-log .entry").count() == 10


async def test_a_shared_room_by_its_name(http_server_client):
    """Two browsers opening /models?room=<name> follow one room: one's batch shows in both."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        first = await open_models(browser, url, "together")
        second = await open_models(browser, url, "together")
        assert await room_of(first) == await room_of(second) == "models-together"
        await send_batch(first)
        for model in MODELS:
            await second.locator(f"#model-{model} .model-log .entry",
                                 has_text="Test 10 of 10").wait_for(timeout=WAIT)


async def test_bytes_count_headers_and_differ_by_method(http_server_client):
    """After a batch each method shows its own bytes per message, and the long-polling
    panel counts more than the bodies it was sent: their headers too."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        long_polls = []
        page.on("requestfinished", lambda request: long_polls.append(request) if (
            "/poll/chat/" in request.url and request.method == "GET"
            and "wait=0" not in request.url) else None)
        await page.goto(f"{url}?room=bytes")
        for model in MODELS:
            await page.wait_for_selector(
                f'#model-{model} .model-state[data-state="open"]', timeout=WAIT)
        await send_batch(page)
        per_message = [await stat(page, model, "per-message") for model in MODELS]
        assert len(set(per_message)) == 4, per_message
        bodies = [len(await (await request.response()).body()) for request in long_polls]
        assert bodies
        counted = int(await page.locator(
            '#model-long [data-stat="bytes"]').get_attribute("data-bytes"))
        assert counted >= sum(bodies) + 100 * len(bodies)


async def test_added_latency_shows_in_the_websocket_delays(http_server_client):
    """With 300 ms of added latency selected, every message the WebSocket panel shows took
    at least 300 ms, and the address keeps the choice."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "slow")
        await page.select_option("#models-latency", "300")
        assert "latency=300" in page.url
        for model in MODELS:
            await page.wait_for_selector(
                f'#model-{model} .model-state[data-state="open"]', timeout=WAIT)
        await send_batch(page)
        delays = await page.locator("#model-ws .model-log .entry .delay").all_text_contents()
        assert len(delays) == 10
        assert all(milliseconds(delay) >= 300 for delay in delays), delays


def milliseconds(shown):
    """A delay as the page shows it ("312 ms", "1.20 s") in milliseconds."""
    number, unit = shown.split()
    return float(number) * (1000 if unit == "s" else 1)


async def test_the_summary_is_a_table(http_server_client):
    """After a batch, the summary is a table: a row per method, with its median delay,
    requests, bytes received and bytes per message."""
    url = http_server_client.get_url("/models")
    async with chromium() as browser:
        page = await open_models(browser, url, "table")
        assert not await page.locator("#models-summary").is_visible()
        await send_batch(page)
        await page.locator("#models-status", has_text="All 10 messages shown everywhere").wait_for(
            timeout=WAIT)
        table = page.locator("table#models-summary")
        assert await table.is_visible()
        assert await table.locator("thead th").all_text_contents() == [
            "Method", "Median delay", "Requests", "Received", "Per message"]
        assert await table.locator("tbody th[scope=row]").all_text_contents() == [
            "Short polling", "Long-polling", "Server-Sent Events", "WebSocket"]
        for row in range(4):
            cells = await table.locator("tbody tr").nth(row).locator("td").all_text_contents()
            assert len(cells) == 4 and cells[0].endswith("ms") and cells[2].endswith("B")
