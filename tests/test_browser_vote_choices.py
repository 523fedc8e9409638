"""Changing one's vote and multiple choice, in a real headless Chromium."""

import json

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected
from tests.test_browser_vote import option

pytestmark = pytest.mark.browser

DESKTOP = dict(viewport={"width": 1280, "height": 800})


async def create(client, **fields) -> dict:
    """Create a poll through the API; its JSON."""
    body = {"title": "Pick", "options": ["Tea", "Coffee", "Milk"], **fields}
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps(body))
    return json.loads(response.body)


async def test_a_voter_changes_its_vote_and_counts_once(http_server_client):
    """Where the poll allows it, a voter who clicks another option moves its vote there:
    the counts follow and the total stays 1."""
    poll = await create(http_server_client, allow_change=True)
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(page)
        await option(page, "1").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="1"].chosen')
        await option(page, "3").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="3"].chosen[data-votes="1"]')
        assert await option(page, "1").get_attribute("data-votes") == "0"
        assert await page.locator("#poll-total").text_content() == "1 vote"
        assert await page.locator("#poll-reason").is_hidden()
        assert errors == []


async def test_multiple_choice_ticks_then_sends_up_to_the_limit(http_server_client):
    """In a two-choice poll a voter ticks two options (a third is refused in words), sends
    them with one button, and both count; after a reload both are marked as its vote."""
    poll = await create(http_server_client, max_choices=2)
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(page)
        send = page.locator("#poll-send")
        assert await send.is_disabled()
        await option(page, "1").locator("button").click()
        await option(page, "3").locator("button").click()
        await option(page, "2").locator("button").click()
        assert "at most 2" in await page.locator("#poll-note").text_content()
        assert await option(page, "2").locator("button").get_attribute("aria-pressed") == "false"
        await send.click()
        await page.wait_for_selector('#poll-options li[data-option="3"].chosen[data-votes="1"]')
        assert await option(page, "1").get_attribute("data-votes") == "1"
        assert await page.locator("#poll-total").text_content() == "2 votes"
        await page.reload()
        await wait_connected(page)
        assert await page.locator("#poll-options li.chosen").count() == 2
        assert errors == []
