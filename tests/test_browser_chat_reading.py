"""Reading the chat page in a real headless Chromium: guests told apart by their labels,
runs of one sender and day lines, a count on "new messages", and a screen-reader region
that reads what happens, never the replayed history."""

import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.browser import chromium
from tests.test_browser_chat_fallback import WAIT, open_chat, say

pytestmark = pytest.mark.browser

GUESTS = ["guest-one-browser-0123456", "guest-two-browser-0123456"]  # chat cookies


async def post(http_server_client, room: str, text: str, cookie: str = GUESTS[0]) -> None:
    """A message sent over HTTP without a nickname, from the browser with ``cookie``."""
    response = await AsyncHTTPClient().fetch(
        http_server_client.get_url(f"/poll/chat/{room}"), method="POST",
        body=json.dumps({"text": text}),
        headers={"Content-Type": "application/json", "Cookie": f"chat_id={cookie}"})
    assert response.code == 200


async def test_guests_are_told_apart_and_runs_are_grouped(http_server_client):
    """Two nameless browsers show as two different guest labels, each the same on all its
    messages; a sender's second message in a row hides the repeated name (still read by
    screen readers); a day line opens the day."""
    room = "guests"
    async with chromium() as browser:
        ana = await open_chat(browser, http_server_client.get_url("/chat"), "ana", room)
        for text, cookie in [("one", GUESTS[0]), ("two", GUESTS[0]), ("three", GUESTS[1])]:
            await post(http_server_client, room, text, cookie)
        entries = ana.locator("#chat-log .entry.msg")
        await entries.filter(has_text="three").wait_for(timeout=WAIT)
        names = await ana.locator("#chat-log .entry.msg .who").all_text_contents()
        assert names[0] == names[1] != names[2]
        assert all(name.startswith("guest-") for name in names)
        classes = [await entries.nth(n).get_attribute("class") for n in range(3)]
        assert ["cont" in each.split() for each in classes] == [False, True, False]
        repeated = entries.nth(1).locator(".who")  # in the text for screen readers, unseen
        assert await repeated.text_content() == names[0]
        assert await repeated.evaluate("e => e.getBoundingClientRect().width") <= 1
        assert await ana.locator("#chat-log .event.day").all_text_contents() == ["Today"]


async def test_the_live_region_reads_new_messages_not_the_history(http_server_client):
    """Joining a room with history puts none of it in the screen-reader region; a message
    that arrives afterwards is read."""
    room = "announce"
    for n in range(5):
        await post(http_server_client, room, f"old {n}")
    async with chromium() as browser:
        ana = await open_chat(browser, http_server_client.get_url("/chat"), "ana", room)
        await ana.locator("#chat-log .entry.msg", has_text="old 4").wait_for(timeout=WAIT)
        assert await ana.locator("#chat-log[aria-live]").count() == 0
        live = ana.locator("#chat-live")
        assert "old" not in await live.text_content()
        await post(http_server_client, room, "fresh news")
        await live.locator("p", has_text="fresh news").wait_for(state="attached", timeout=WAIT)
        assert "old" not in await live.text_content()


async def test_the_new_messages_button_counts_what_arrived_below(http_server_client):
    """Scrolled up, three arriving messages make the button say "3 new messages"; pressing
    it goes to the end and hides it."""
    room = "below"
    async with chromium() as browser:
        ana = await open_chat(browser, http_server_client.get_url("/chat"), "ana", room)
        for n in range(30):
            await say(ana, f"filler {n}\nsecond line")
        await ana.locator("#chat-log .entry.msg", has_text="filler 29").wait_for(timeout=WAIT)
        await ana.locator("#chat-log").evaluate("log => { log.scrollTop = 0; }")
        await ana.wait_for_function(
            "() => { const log = document.getElementById('chat-log');"
            " return log.scrollHeight - log.scrollTop - log.clientHeight > 200; }")
        for n in range(3):
            await post(http_server_client, room, f"below {n}")
        button = ana.locator("#chat-new")
        await button.filter(has_text="3 new messages").wait_for(timeout=WAIT)
        await button.click()
        await button.wait_for(state="hidden", timeout=WAIT)
