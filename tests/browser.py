"""A real headless Chromium (Debian's package) driven by Playwright, for page tests."""

from contextlib import asynccontextmanager
from typing import AsyncIterator

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.support import find_program

# Without the background-networking switches Chromium keeps dialling Google's hosts,
# which this closed network refuses; --no-sandbox because tests may run as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The Chromium binary: $CHROMIUM, or Debian's. Missing it fails under CI, skips elsewhere."""
    return find_program("CHROMIUM", "chromium")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A fresh headless browser, closed afterwards."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


def collect_console_errors(page: Page) -> list[str]:
    """Record every console error and uncaught page error (CSP violations among them)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def wait_connected(page: Page) -> None:
    """Wait until the page's connection badge says the socket is open."""
    await page.wait_for_selector('#conn-state[data-state="open"]', timeout=10_000)
