"""The shared counter page in a real headless Chromium: two pages, one number."""

import pytest

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

WAIT = 10_000


async def test_a_press_on_one_page_shows_on_another(http_server_client):
    """A person presses +1 on one phone-sized page; both pages show the new value."""
    url = http_server_client.get_url("/counter?name=browser")
    async with chromium() as browser:
        pages, errors = [], []
        for _ in range(2):
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            errors.append(collect_console_errors(page))
            await page.goto(url)
            await wait_connected(page)
            await page.locator("#counter-value", has_text="0").wait_for(timeout=WAIT)
            pages.append(page)
        assert await pages[0].locator("#counter-name").text_content() == "browser"
        await pages[0].click("#counter-increment")
        for page in pages:
            await page.locator("#counter-value", has_text="1").wait_for(timeout=WAIT)
        assert errors == [[], []]
