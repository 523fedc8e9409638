"""The present view on a projector, in a real headless Chromium: one screen whatever the
poll, a join address that never breaks inside an id, and no manage link."""

import json

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

SCREENS = [(1280, 720), (1280, 800), (1920, 1080)]
# Ten options of 80 characters, each different from the first word on.
LONG_OPTIONS = [f"{n} " + "a fairly long answer that somebody typed into the option box " * 2
                for n in range(10)]
LONG_OPTIONS = [label[:80].strip() for label in LONG_OPTIONS]


async def create_poll(client, title: str, options: list[str]) -> dict:
    """Create a poll through the API; its JSON with the manage token."""
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": title, "options": options, "one_vote_per_voter": False}),
    )
    return json.loads(response.body)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_ten_long_options_fit_one_screen_with_readable_text_and_bars(
    http_server_client, scheme
):
    """Ten options of 80 characters and a long question fit 1280x720, 1280x800 and
    1920x1080 without scrolling; labels stay at least 12 px and bars at least 8 px tall."""
    poll = await create_poll(
        http_server_client, "Which of these long answers should the team pick for the next "
        "quarter's main project?", LONG_OPTIONS)
    async with chromium() as browser:
        for width, height in SCREENS:
            context = await browser.new_context(
                viewport={"width": width, "height": height}, color_scheme=scheme)
            page = await context.new_page()
            errors = collect_console_errors(page)
            await page.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
            await wait_connected(page)
            await page.wait_for_selector('#present-bars li[data-option="10"]')
            await page.wait_for_selector("#present[data-fit]")
            size = await page.evaluate(
                "[document.documentElement.scrollHeight, window.innerHeight]")
            assert size[0] <= size[1], (width, height, size)
            label_px = await page.locator("#present-bars .label").first.evaluate(
                "label => parseFloat(getComputedStyle(label).fontSize)")
            bar_px = await page.locator("#present-bars .bar-track").first.evaluate(
                "track => track.getBoundingClientRect().height")
            assert label_px >= 12 and bar_px >= 8, (width, height, label_px, bar_px)
            assert await page.locator("#present-qr").is_visible()
            assert errors == []
            await context.close()


async def test_the_join_address_never_breaks_inside_an_id(http_server_client):
    """On a narrow phone the join address may wrap between host and path, never inside
    either, and the code is shown big."""
    poll = await create_poll(http_server_client, "Lunch?", ["Tea", "Coffee"])
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 320, "height": 640})
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        parts = page.locator("#present-url .nobreak")
        assert await parts.count() == 2
        assert await parts.nth(1).text_content() == f"/j/{poll['code']}"
        for index in range(2):
            assert await parts.nth(index).evaluate("span => span.getClientRects().length") == 1
        assert await page.locator("#present-code").text_content() == poll["code"]


async def test_the_manage_link_is_never_on_the_present_view(http_server_client):
    """The creator's tab, which holds the manage token, opens the present view: neither the
    token nor a manage link is anywhere on it."""
    poll = await create_poll(http_server_client, "Lunch?", ["Tea", "Coffee"])
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(http_server_client.get_url(
            f"/vote/{poll['id']}#manage={poll['manage_token']}"))
        await page.locator("#manage").wait_for(state="visible")
        await page.click("#present-link")
        await page.wait_for_url("**/present")
        await wait_connected(page)
        html = await page.content()
        assert poll["manage_token"] not in html and "#manage=" not in html


async def shows(page, selector: str, text: str) -> None:
    """Wait until the element shows exactly ``text``."""
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text])


async def test_the_present_view_shows_who_votes_and_who_watches_live(http_server_client):
    """The present view counts its viewers and voters live: a phone opening the poll adds a
    viewer, its vote a voter, and its leaving takes the viewer away again; the poll page
    shows the same counts."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": "Lunch?", "options": ["Tea", "Coffee"],
                         "one_vote_per_voter": True}))
    poll = json.loads(response.body)
    async with chromium() as browser:
        screen = await (await browser.new_context()).new_page()
        errors = collect_console_errors(screen)
        await screen.goto(http_server_client.get_url(f"/vote/{poll['id']}/present"))
        await wait_connected(screen)
        await shows(screen, "#present-participants", "0 voted · 1 watching")
        phone = await (await browser.new_context()).new_page()
        await phone.goto(http_server_client.get_url(f"/vote/{poll['id']}"))
        await wait_connected(phone)
        await shows(screen, "#present-participants", "0 voted · 2 watching")
        await phone.locator('#poll-options li[data-option="2"] button').click()
        await shows(screen, "#present-participants", "1 voted · 2 watching")
        await shows(phone, "#poll-participants", "1 voted · 2 watching")
        await phone.close()
        await shows(screen, "#present-participants", "1 voted · 1 watching")
        assert errors == []
