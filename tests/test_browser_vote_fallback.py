"""Voting where WebSockets do not get through, in a real headless Chromium: the options
come with the page, the bars move over Server-Sent Events and votes are POSTed."""

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected
from tests.test_browser_vote import create_poll, option

pytestmark = pytest.mark.browser

NO_WEBSOCKET = "delete window.WebSocket;"
# A WebSocket that never opens, as behind a proxy that refuses the upgrade.
FAILING_WEBSOCKET = """
window.WebSocket = class {
  constructor() { setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 10); }
  send() { throw new Error("not open"); }
  close() {}
};
window.WebSocket.OPEN = 1;
"""


@pytest.mark.parametrize("blocker", [NO_WEBSOCKET, FAILING_WEBSOCKET],
                         ids=["no-websocket", "websocket-never-opens"])
async def test_voting_and_live_bars_work_without_websockets(http_server_client, blocker):
    """With WebSockets missing or never opening, a voter sees the options, votes, and a
    present view that has no WebSocket either moves its bar; the vote counts once."""
    poll = await create_poll(http_server_client)
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        await context.add_init_script(blocker)
        voter = await context.new_page()
        present = await context.new_page()
        errors = [collect_console_errors(voter), collect_console_errors(present)]
        await present.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        await voter.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(voter)
        await wait_connected(present)

        await option(voter, "2").locator("button").click()
        await present.wait_for_selector('#present-bars li[data-option="2"][data-votes="1"]')
        bar = present.locator('#present-bars li[data-option="2"] .bar')
        assert await bar.evaluate("bar => bar.style.width") == "100%"
        await voter.wait_for_selector('#poll-options li[data-option="2"].chosen')
        reason = voter.locator("#poll-reason")
        assert "You already voted" in await reason.text_content()
        assert await voter.locator("#poll-total").text_content() == "1 vote"
        assert errors == [[], []]


async def test_options_and_counts_come_with_the_page(http_server_client):
    """With neither WebSockets nor event streams getting through, the poll page and the
    present view still show every option and its count."""
    poll = await create_poll(http_server_client, one_vote_per_voter=False)
    await http_server_client.fetch(
        f"/api/polls/{poll['id']}/vote", method="POST", body='{"option": "1"}',
        headers={"Content-Type": "application/json"})
    async with chromium() as browser:
        context = await browser.new_context()
        await context.add_init_script(NO_WEBSOCKET)
        await context.route("**/sse/**", lambda route: route.abort())
        page = await context.new_page()
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await page.wait_for_selector('#poll-options li[data-option="1"][data-votes="1"]')
        assert await option(page, "2").locator(".label").text_content() == "Coffee"
        assert await page.locator("#poll-total").text_content() == "1 vote"
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        await page.wait_for_selector('#present-bars li[data-option="1"][data-votes="1"]')
        assert await page.locator("#present-bars li").count() == 2
