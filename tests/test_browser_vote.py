"""The vote pages in a real headless Chromium, at desktop and phone sizes."""

import json

import pytest

from realtime.pubsub.delivery import CloseReason
from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

SIZES = {
    "desktop": dict(viewport={"width": 1280, "height": 800}),
    "phone": dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True),
}


@pytest.fixture(params=list(SIZES))
def size(request) -> dict:
    """The browser context options of one screen size."""
    return SIZES[request.param]


def option(page, option_id: str):
    return page.locator(f'#poll-options li[data-option="{option_id}"]')


async def create_poll(client, **fields) -> dict:
    """Create a poll through the API; its JSON with the manage token."""
    body = {"title": "Pick one", "options": ["Tea", "Coffee"], **fields}
    response = await client.fetch(
        "/api/polls", method="POST", body=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(response.body)


async def test_click_in_one_page_moves_the_bar_in_another(http_server_client):
    """Two browsers on one poll: a click in the first changes the count and bar in the second."""
    async with chromium() as browser:
        pages = [await (await browser.new_context()).new_page() for _ in range(2)]
        errors = [collect_console_errors(page) for page in pages]
        for page in pages:
            await page.goto(http_server_client.get_url("/vote/demo"))
            await wait_connected(page)
        watcher_bar = option(pages[1], "2").locator(".bar")
        assert await watcher_bar.evaluate("bar => bar.style.width") == "0%"

        await option(pages[0], "2").locator("button").click()

        await pages[1].wait_for_selector('#poll-options li[data-option="2"][data-votes="1"]')
        assert await option(pages[1], "2").locator(".count").text_content() == "1 vote"
        assert await option(pages[1], "2").locator(".percent").text_content() == "100%"
        assert await watcher_bar.evaluate("bar => bar.style.width") == "100%"
        assert await pages[1].locator("#poll-total").text_content() == "1 vote"
        assert errors == [[], []]


async def test_counts_use_plurals(http_server_client, size):
    """Counts read "0 votes", "1 vote", "2 votes", never "1 votes"."""
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        await page.goto(http_server_client.get_url("/vote/demo"))
        await wait_connected(page)
        assert await page.locator("#poll-total").text_content() == "0 votes"
        await option(page, "1").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="1"][data-votes="1"]')
        assert await option(page, "1").locator(".count").text_content() == "1 vote"
        assert await page.locator("#poll-total").text_content() == "1 vote"
        await option(page, "1").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="1"][data-votes="2"]')
        assert await option(page, "1").locator(".count").text_content() == "2 votes"
        assert await page.locator("#poll-total").text_content() == "2 votes"


async def test_demo_options_carry_a_gloss(http_server_client, size):
    """The demo poll keeps its Chinese names and explains each in English."""
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        await page.goto(http_server_client.get_url("/vote/demo"))
        await wait_connected(page)
        assert await option(page, "1").locator(".label").text_content() == "钢弹"
        gloss = option(page, "3").locator(".gloss")
        assert await gloss.is_visible() and "Little Treasure" in await gloss.text_content()


async def test_voted_buttons_look_disabled_say_why_and_mark_your_vote(http_server_client, size):
    """After a one-vote poll's vote the buttons are disabled and look it, a sentence says
    why, and the chosen option says "Your vote" in text, also after a reload."""
    poll = await create_poll(http_server_client, one_vote_per_voter=True)
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(page)
        enabled_cursor = await option(page, "2").locator("button").evaluate(
            "b => getComputedStyle(b).cursor")
        assert await page.locator("#poll-reason").is_hidden()
        await option(page, "2").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="2"][data-votes="1"]')

        for _ in range(2):
            reason = page.locator("#poll-reason")
            await reason.wait_for(state="visible")
            assert "You already voted" in await reason.text_content()
            for option_id in ["1", "2"]:
                button = option(page, option_id).locator("button")
                assert await button.is_disabled()
                assert "poll-reason" in await button.get_attribute("aria-describedby")
                cursor, border = await button.evaluate(
                    "b => [getComputedStyle(b).cursor, getComputedStyle(b).borderTopStyle]")
                assert cursor == "not-allowed" != enabled_cursor
                if option_id == "1":  # the chosen one keeps its solid, marked edge
                    assert border == "dashed"
            mine = option(page, "2").get_by_text("Your vote")
            assert await mine.is_visible()
            assert await option(page, "1").get_by_text("Your vote").is_hidden()
            await page.reload()
            await wait_connected(page)
            await page.wait_for_selector('#poll-options li[data-option="2"].chosen')
        assert errors == []


async def test_bars_have_accessible_names(http_server_client, size):
    """Each option is named "label: N votes, P%" for screen readers, on the poll page
    and in the present view."""
    async with chromium() as browser:
        context = await browser.new_context(**size)
        page = await context.new_page()
        await page.goto(http_server_client.get_url("/vote/demo"))
        await wait_connected(page)
        await page.get_by_role("button", name="贝贝: 0 votes, 0%").click()
        await page.get_by_role("button", name="贝贝: 1 vote, 100%").wait_for()
        await page.get_by_role("button", name="钢弹: 0 votes, 0%").wait_for()

        present = await context.new_page()
        await present.goto(http_server_client.get_url("/vote/demo/present"))
        await wait_connected(present)
        await present.get_by_role("img", name="贝贝: 1 vote, 100%").wait_for()
        await present.get_by_role("img", name="铁锤: 0 votes, 0%").wait_for()


async def test_creating_a_poll_shows_the_manage_link_and_leaves_it_unlisted(
    http_server_client, size
):
    """A poll made with the form opens with a manage link to keep, the token leaves the
    address bar, and the poll is not in the public list."""
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        errors = collect_console_errors(page)
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-title", "Tea or <b>coffee</b>?")
        await page.fill("#new-option-0", "Tea")
        await page.fill("#new-option-1", "Coffee")
        await page.click("#new-create")
        await page.wait_for_url("**/vote/*")
        await wait_connected(page)
        assert await page.locator("h1").text_content() == "Tea or <b>coffee</b>?"
        panel = page.locator("#manage")
        await panel.wait_for(state="visible")
        link = await page.locator("#manage-link").input_value()
        poll_id = page.url.rsplit("/", 1)[1]
        assert link.startswith(http_server_client.get_url(f"/vote/{poll_id}#manage="))
        assert "#" not in page.url  # copying the address to invite voters is safe
        await page.reload()
        await panel.wait_for(state="visible")  # this tab keeps it

        await page.goto(http_server_client.get_url("/vote"))
        assert await page.locator(f'a[href="/vote/{poll_id}"]').count() == 0
        assert errors == []


async def test_closing_from_the_manage_link_disables_voting_live(http_server_client, size):
    """The creator closes the poll from the manage link; another open page disables its
    buttons at once and says the poll is closed; reopening enables them again."""
    poll = await create_poll(http_server_client)
    async with chromium() as browser:
        owner = await (await browser.new_context(**size)).new_page()
        voter = await (await browser.new_context(**size)).new_page()
        errors = [collect_console_errors(owner), collect_console_errors(voter)]
        await voter.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(voter)
        assert await voter.locator("#manage").is_hidden()
        await owner.goto(
            http_server_client.get_url(f"/vote/{poll['id']}#manage={poll['manage_token']}"))
        await wait_connected(owner)

        await owner.click("#manage-close")
        # Disabled as aria-disabled (a disabled button would drop the keyboard focus).
        await voter.wait_for_selector('#poll-options button[aria-disabled="true"]')
        assert await voter.locator('#poll-options button[aria-disabled="false"]').count() == 0
        assert "Poll closed" in await voter.locator("#poll-reason").text_content()
        assert await voter.locator("#poll-closed").is_visible()
        await owner.locator("#manage-reopen").wait_for(state="visible")

        await owner.click("#manage-reopen")
        await voter.wait_for_selector('#poll-options button[aria-disabled="false"]')
        assert await voter.locator("#poll-closed").is_hidden()
        assert errors == [[], []]


async def test_present_view_shows_question_total_and_qr_and_updates_live(
    http_server_client, size
):
    """The present view shows the question, the total and a loaded QR code, and its bars
    and total follow votes cast on another page."""
    poll = await create_poll(http_server_client, title="Tea time?")
    async with chromium() as browser:
        context = await browser.new_context(**size)
        present = await context.new_page()
        errors = collect_console_errors(present)
        await present.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        await wait_connected(present)
        assert await present.locator("h1").text_content() == "Tea time?"
        assert await present.locator("#present-total").text_content() == "0 votes"
        qr = present.locator("#present-qr")
        assert await qr.is_visible()
        assert await qr.evaluate("img => img.complete && img.naturalWidth > 0")
        assert await present.locator(".site-header").is_hidden()

        voter = await context.new_page()
        await voter.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(voter)
        await option(voter, "2").locator("button").click()
        await present.wait_for_selector('#present-bars li[data-option="2"][data-votes="1"]')
        assert await present.locator("#present-total").text_content() == "1 vote"
        bar = present.locator('#present-bars li[data-option="2"] .bar')
        assert await bar.evaluate("bar => bar.style.width") == "100%"
        assert errors == []


async def test_form_error_is_shown_next_to_the_field(http_server_client, size):
    """A repeated option is refused with a plain sentence right under that option's box,
    which is marked invalid and described by it."""
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        await page.goto(http_server_client.get_url("/vote"))
        await page.fill("#new-title", "Drinks")
        await page.fill("#new-option-0", "Tea")
        await page.fill("#new-option-1", "Coffee")
        await page.fill("#new-option-2", "tea")
        await page.click("#new-create")
        error = page.locator("#new-option-2-error")
        await error.wait_for(state="visible")
        assert "Option 3 is the same as option 1." in await error.text_content()
        field = page.locator("#new-option-2")
        assert await field.get_attribute("aria-invalid") == "true"
        assert await field.get_attribute("aria-describedby") == "new-option-2-error"
        box, under = await field.bounding_box(), await error.bounding_box()
        assert 0 <= under["y"] - (box["y"] + box["height"]) < 24
        assert await page.locator("#new-title-error").is_hidden()

        await page.fill("#new-title", "")
        await page.fill("#new-option-2", "Milk")
        await page.click("#new-create")
        title_error = page.locator("#new-title-error")
        await title_error.wait_for(state="visible")
        assert await title_error.text_content() == "Write a question."
        assert await error.is_hidden()


async def test_page_reconnects_with_a_fresh_snapshot(http_server_client, hub):
    """After the server drops the socket the page reconnects and still counts right."""
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url("/vote/demo"))
        await wait_connected(page)
        await option(page, "3").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="1"]')

        hub.close_all(CloseReason.SHUTDOWN)
        await page.wait_for_selector('#conn-state:not([data-state="open"])')
        await wait_connected(page)
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="1"]')
        await option(page, "3").locator("button").click()
        await page.wait_for_selector('#poll-options li[data-option="3"][data-votes="2"]')


async def test_keyboard_focus_stays_on_the_option_after_voting(http_server_client, size):
    """Voting with the keyboard in a one-vote poll leaves the focus on the option pressed
    (now marked as the vote), not on the page."""
    poll = await create_poll(http_server_client, one_vote_per_voter=True)
    async with chromium() as browser:
        page = await (await browser.new_context(**size)).new_page()
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(page)
        button = option(page, "2").locator("button")
        await button.focus()
        await page.keyboard.press("Enter")
        await page.wait_for_selector('#poll-options li[data-option="2"].chosen')
        assert await button.get_attribute("aria-disabled") == "true"
        assert await button.evaluate("b => b === document.activeElement")
