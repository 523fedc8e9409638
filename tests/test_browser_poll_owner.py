"""A poll's owner beyond one tab, in a real headless Chromium: every tab of the browser
that created it, a browser that opened its manage link, and the present view's buttons."""

import json
from pathlib import Path

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

DESKTOP = dict(viewport={"width": 1280, "height": 800})


async def create_with_the_form(page, base: str) -> str:
    """Create a poll with the /vote form; its id."""
    await page.goto(base + "/vote")
    await page.fill("#new-title", "Tea or coffee?")
    await page.fill("#new-option-0", "Tea")
    await page.fill("#new-option-1", "Coffee")
    await page.click("#new-create")
    await page.wait_for_url("**/vote/*")
    await page.locator("#manage").wait_for(state="visible")
    return page.url.rsplit("/", 1)[1]


async def test_another_tab_of_the_creating_browser_manages_the_poll(http_server_client):
    """A new tab of the browser that created the poll shows the manage panel without the
    manage link, and its present view closes and reopens voting for everyone."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        owner = await browser.new_context(**DESKTOP)
        poll_id = await create_with_the_form(await owner.new_page(), base)
        tab = await owner.new_page()
        errors = collect_console_errors(tab)
        await tab.goto(f"{base}/vote/{poll_id}")
        await tab.locator("#manage").wait_for(state="visible")

        voter = await (await browser.new_context(**DESKTOP)).new_page()
        await voter.goto(f"{base}/vote/{poll_id}")
        await wait_connected(voter)
        assert await voter.locator("#manage").is_hidden()

        await tab.goto(f"{base}/vote/{poll_id}/present")
        await wait_connected(tab)
        await tab.locator("#present-close").wait_for(state="visible")
        await tab.click("#present-close")
        await voter.wait_for_selector("#poll-options button[aria-disabled=\"true\"]")
        assert await tab.locator("#present-closed").is_visible()
        await tab.locator("#present-reopen").wait_for(state="visible")
        await tab.click("#present-reopen")
        await voter.wait_for_selector("#poll-options button:enabled")
        assert await tab.locator("#present-close").is_visible()
        assert errors == []


async def test_the_manage_link_on_another_device_adopts_the_poll(http_server_client):
    """The manage link opened in another browser makes it an owner: the panel shows, and
    still shows after a reload and on its present view, with the link gone from the
    address."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        creator = await (await browser.new_context(**DESKTOP)).new_page()
        poll_id = await create_with_the_form(creator, base)
        link = await creator.locator("#manage-link").input_value()

        device = await (await browser.new_context(**DESKTOP)).new_page()
        await device.goto(link)
        await device.locator("#manage").wait_for(state="visible")
        assert "#" not in device.url
        await device.reload()
        await device.locator("#manage").wait_for(state="visible")
        await device.goto(f"{base}/vote/{poll_id}/present")
        await device.locator("#present-close").wait_for(state="visible")


async def test_a_wrong_manage_link_is_not_adopted(http_server_client):
    """A manage link whose token is not the poll's says so and shows no manage panel, even
    after a reload."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": "Lunch?", "options": ["Tea", "Coffee"]}))
    poll = json.loads(response.body)
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        await page.goto(http_server_client.get_url(f"/vote/{poll['id']}#manage=not-the-token"))
        note = page.locator("#poll-note")
        await note.filter(has_text="does not belong to this poll").wait_for()
        assert await page.locator("#manage").is_hidden()
        await page.reload()
        await wait_connected(page)
        assert await page.locator("#manage").is_hidden()


async def test_the_manage_link_stays_hidden_until_asked_for(http_server_client):
    """The owner's poll page, likely on a projector, hides the manage link until Show is
    pressed, and the present view never has it."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP)).new_page()
        poll_id = await create_with_the_form(page, base)
        link = page.locator("#manage-link")
        assert await link.is_hidden()
        token = (await link.input_value()).split("#manage=")[1]
        assert token not in await page.locator("body").inner_text()
        await page.click("#manage-show")
        assert await link.is_visible()
        assert await page.get_attribute("#manage-show", "aria-expanded") == "true"
        await page.goto(f"{base}/vote/{poll_id}/present")
        await page.locator("#present-close").wait_for(state="visible")
        assert token not in await page.content()


async def test_hidden_results_show_once_the_owner_reveals_them(http_server_client):
    """A poll made with hidden results shows voters no counts, only the total; the
    owner's Reveal results on the present view shows every page the bars."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        owner = await (await browser.new_context(**DESKTOP)).new_page()
        errors = collect_console_errors(owner)
        await owner.goto(base + "/vote")
        await owner.fill("#new-title", "Secret?")
        await owner.fill("#new-option-0", "Tea")
        await owner.fill("#new-option-1", "Coffee")
        await owner.check("#new-hidden")
        await owner.click("#new-create")
        await owner.wait_for_url("**/vote/*")
        poll_id = owner.url.rsplit("/", 1)[1]
        await owner.locator("#manage").wait_for(state="visible")

        voter = await (await browser.new_context(**DESKTOP)).new_page()
        await voter.goto(f"{base}/vote/{poll_id}")
        await wait_connected(voter)
        await voter.locator('#poll-options li[data-option="2"] button').click()
        await voter.wait_for_selector('#poll-options li[data-option="2"].chosen')
        assert "results hidden" in await voter.locator("#poll-total").text_content()
        assert await voter.locator('#poll-options li[data-option="2"] .count').text_content() == ""

        await owner.goto(f"{base}/vote/{poll_id}/present")
        await wait_connected(owner)
        numbers = owner.locator('#present-bars li[data-option="2"] .numbers')
        assert await numbers.text_content() == ""
        await owner.click("#present-reveal")
        await voter.wait_for_selector('#poll-options li[data-option="2"][data-votes="1"]')
        assert await voter.locator("#poll-total").text_content() == "1 vote"
        await owner.wait_for_selector('#present-bars li[data-option="2"][data-votes="1"]')
        assert await owner.locator("#present-reveal").is_hidden()
        assert errors == []


async def test_the_owner_duplicates_and_downloads_the_results(http_server_client):
    """From the manage panel the owner downloads the results as a CSV file and duplicates
    the poll, landing on the copy as its owner."""
    base = http_server_client.get_url("").rstrip("/")
    async with chromium() as browser:
        page = await (await browser.new_context(**DESKTOP, accept_downloads=True)).new_page()
        errors = collect_console_errors(page)
        poll_id = await create_with_the_form(page, base)
        await wait_connected(page)
        await page.locator('#poll-options li[data-option="1"] button').click()
        await page.wait_for_selector('#poll-options li[data-option="1"][data-votes="1"]')
        async with page.expect_download() as waiting:
            await page.click("#manage-csv")
        download = await waiting.value
        assert download.suggested_filename == f"poll-{poll_id}.csv"
        text = Path(await download.path()).read_text(encoding="utf-8")
        assert text.splitlines()[1] == "1,Tea,1,100.0"

        await page.click("#manage-duplicate")
        await page.wait_for_url(lambda url: poll_id not in url and "/vote/" in url)
        await page.locator("#manage").wait_for(state="visible")
        assert await page.locator("h1").text_content() == "Tea or coffee?"
        await wait_connected(page)
        assert await page.locator("#poll-total").text_content() == "0 votes"
        assert errors == []
