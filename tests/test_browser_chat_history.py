"""The chat page's "Load earlier messages" in a real headless Chromium: past the 50
messages of a welcome, the button pages back through the room's history, over a WebSocket
and over long-polling."""

import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.browser import chromium
from tests.test_browser_chat_fallback import NO_STREAMS, WAIT, open_chat

pytestmark = pytest.mark.browser

SENT = 60  # ten more than a welcome's history (--chat-history 50)


async def post(http_server_client, room: str, text: str) -> None:
    """A message sent over HTTP by a cookie-less client."""
    response = await AsyncHTTPClient().fetch(
        http_server_client.get_url(f"/poll/chat/{room}"), method="POST",
        body=json.dumps({"text": text}), headers={"Content-Type": "application/json"})
    assert response.code == 200


@pytest.mark.parametrize("block", [None, NO_STREAMS], ids=["websocket", "long-polling"])
async def test_load_earlier_shows_the_whole_kept_history_once(http_server_client, block):
    """Joining a room of 60 messages shows the newest 50 and the button; one click puts the
    10 before them above, in order, says it reached the start, and focus stays usable."""
    room = f"earlier-{'poll' if block else 'ws'}"
    for n in range(SENT):
        await post(http_server_client, room, f"m{n:02d}")
    async with chromium() as browser:
        page = await open_chat(browser, http_server_client.get_url("/chat"), "ana", room,
                               block=block)
        messages = page.locator("#chat-log .entry.msg .text")
        await page.locator("#chat-log .entry.msg", has_text="m59").wait_for(timeout=WAIT)
        assert await messages.count() == 50
        button = page.locator("#chat-earlier")
        await button.focus()
        await page.keyboard.press("Enter")
        start = page.locator("#chat-log .event", has_text="The start of what this room keeps")
        await start.wait_for(timeout=WAIT)
        assert await messages.all_text_contents() == [f"m{n:02d}" for n in range(SENT)]
        assert await button.is_hidden()
        assert await page.evaluate("document.activeElement.id") == "chat-text"
        assert page.errors == []
