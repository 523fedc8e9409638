"""axe-core, Deque's accessibility engine, run inside a page: the WCAG 2.x A and AA rules.

The engine's script comes from the ``axe-playwright-python`` package (it ships axe-core's
``axe.min.js``, so no Node and no download at test time); the runner here is our own, a few
lines, so the rules it runs are stated in one place: ``WCAG_TAGS``.
"""

import os
from typing import Any

import pytest
from playwright.async_api import Page

# Every WCAG 2.0, 2.1 and 2.2 rule at levels A and AA that axe-core has, color-contrast
# among them (best practices and AAA are left out: they are not what we promise).
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]


def axe_script() -> str:
    """axe-core's source. Missing, it fails the test under CI and skips it elsewhere."""
    try:
        from axe_playwright_python.base import AXE_SCRIPT
    except ImportError:
        message = "axe-playwright-python is not installed (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AXE_SCRIPT


async def violations(page: Page) -> list[str]:
    """Run axe-core on the page as it is now; one readable line per failing element."""
    # evaluate() goes through the DevTools protocol, which the page's CSP does not govern,
    # unlike a <script> tag added to the page.
    await page.evaluate(axe_script())
    options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
    result: dict[str, Any] = await page.evaluate(
        "options => axe.run(document, options)", options)
    lines = []
    for violation in result["violations"]:
        for node in violation["nodes"]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"{violation['id']} ({violation['impact']}) at "
                         f"{' '.join(map(str, node['target']))}: {summary}")
    return lines
