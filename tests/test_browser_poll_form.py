"""The new-poll form and a deleted poll's pages, in a real headless Chromium."""

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected
from tests.test_browser_vote import create_poll

pytestmark = pytest.mark.browser

DESKTOP = dict(viewport={"width": 1280, "height": 800})


async def test_enter_in_an_option_box_adds_the_next_option(http_server_client):
    """Enter in the last option box adds an empty option and moves to it; the form is not
    sent."""
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-title", "Drinks")
        await page.fill("#new-option-0", "Tea")
        await page.press("#new-option-0", "Enter")
        assert await page.evaluate("document.activeElement.id") == "new-option-1"
        await page.fill("#new-option-1", "Coffee")
        await page.press("#new-option-1", "Enter")
        await page.fill("#new-option-2", "Milk")
        await page.press("#new-option-2", "Enter")
        assert await page.evaluate("document.activeElement.id") == "new-option-3"
        assert await page.locator("#new-option-list input").count() == 4
        assert page.url.endswith("/vote")  # still on the form


async def test_placeholders_are_not_answers(http_server_client):
    """No placeholder reads like an answer a voter could pick."""
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        await page.goto(http_server_client.get_url("/vote"))
        placeholders = await page.locator("#new-option-list input").evaluate_all(
            "inputs => inputs.map(input => input.placeholder)")
        assert placeholders == ["Type option 1", "Type option 2", "Type option 3"]


async def test_every_error_is_shown_at_once_beside_its_field(http_server_client):
    """An empty question and two options that look the same show both errors at once, each
    under its own field."""
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-option-0", "Pizza")
        await page.fill("#new-option-1", "Ｐｉｚｚａ")
        await page.click("#new-create")
        await page.locator("#new-option-1-error").wait_for(state="visible")
        assert await page.locator("#new-title-error").text_content() == "Write a question."
        assert await page.locator("#new-option-1-error").text_content() == (
            "Option 2 is the same as option 1.")
        assert await page.locator("#new-title").get_attribute("aria-invalid") == "true"
        assert await page.locator("#new-option-1").get_attribute("aria-invalid") == "true"


async def test_the_form_makes_one_vote_per_voter_polls_by_default(http_server_client):
    """The one-vote box is ticked, and the poll made without touching it takes one vote per
    voter."""
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        await page.goto(http_server_client.get_url("/vote"))
        assert await page.locator("#new-one-vote").is_checked()
        await page.fill("#new-title", "Lunch?")
        await page.fill("#new-option-0", "Tea")
        await page.fill("#new-option-1", "Coffee")
        await page.click("#new-create")
        await page.wait_for_url("**/vote/*")
        await wait_connected(page)
        await page.locator('#poll-options li[data-option="1"] button').click()
        await page.wait_for_selector('#poll-options li[data-option="1"].chosen')
        reason = page.locator("#poll-reason")
        await reason.wait_for(state="visible")
        assert "You already voted" in await reason.text_content()


async def test_a_deleted_poll_says_so_stops_retrying_and_takes_down_the_invitations(
    http_server_client
):
    """When the creator deletes the poll, an open poll page and present view say "This poll
    was deleted", their badge stops retrying, and the QR code and share link disappear."""
    poll = await create_poll(http_server_client)
    async with chromium() as browser:
        context = await browser.new_context(**DESKTOP)
        voter = await context.new_page()
        present = await context.new_page()
        errors = [collect_console_errors(voter), collect_console_errors(present)]
        await voter.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await present.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        await wait_connected(voter)
        await wait_connected(present)

        response = await http_server_client.fetch(
            f"/api/polls/{poll['id']}", method="DELETE",
            headers={"Authorization": f"Bearer {poll['manage_token']}"})
        assert response.code == 204

        for page in (voter, present):
            await page.wait_for_selector('#conn-state[data-state="ended"]')
            assert await page.locator("#conn-state").text_content() == "poll deleted"
        assert await voter.locator("#poll-note").text_content() == "This poll was deleted."
        assert await voter.locator("#share").is_hidden()
        assert await voter.locator(".share-qr").is_hidden()
        assert await present.locator("#present-closed").text_content() == (
            "This poll was deleted.")
        assert await present.locator("#present-qr").is_hidden()
        assert errors == [[], []]
