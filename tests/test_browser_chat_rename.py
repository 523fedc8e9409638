"""The chat page over Server-Sent Events and long-polling, in a real headless Chromium: a
rename is one notice for everyone (no second name that lingers, the renamer never told she
left), and a first message in an empty room is never "Reconnected, but some messages may be
missing"."""

import pytest

from tests.browser import chromium
from tests.test_browser_chat_fallback import NO_STREAMS, NO_WEBSOCKET, WAIT, open_chat, say

pytestmark = pytest.mark.browser

AWAY_GRACE_MS = 10_000  # chat.js: how long a name gone from a welcome may still come back
BLOCKS = {"websocket": None, "sse": NO_WEBSOCKET, "long-polling": NO_STREAMS}


async def online_names(page):
    """The names in the page's online list, as shown."""
    return await page.locator("#chat-online .name").all_text_contents()


@pytest.mark.parametrize("transport", ["sse", "long-polling"])
async def test_a_rename_over_http_is_one_notice_and_no_ghost(http_server_client, transport):
    """Bob, over HTTP, has sent a message and renames himself bea: Alice sees "bob is now
    bea" and only bea online; Bob's page says he is bea and never that bob left."""
    url = http_server_client.get_url("/chat")
    room = f"rename-{transport}"
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", room)
        bob = await open_chat(browser, url, "bob", room, block=BLOCKS[transport],
                              fake_clock=True)
        await say(bob, "first, as bob")  # a POST: the browser's HTTP session holds bob
        await alice.locator("#chat-log .entry.msg", has_text="first, as bob").wait_for(
            timeout=WAIT)

        await bob.fill("#chat-nick", "bea")
        await bob.press("#chat-nick", "Enter")
        await alice.locator("#chat-log .event", has_text="bob is now bea").wait_for(
            timeout=WAIT)
        await bob.locator("#chat-log .event", has_text="You are now bea.").wait_for(
            timeout=WAIT)
        await say(bob, "now as bea")
        line = alice.locator("#chat-log .entry.msg", has_text="now as bea")
        await line.wait_for(timeout=WAIT)
        assert await line.locator(".who").text_content() == "bea"
        assert sorted(await online_names(alice)) == ["alice (you)", "bea"]
        await bob.clock.run_for(AWAY_GRACE_MS + 1_000)  # past any "left" the page delays
        await say(alice, "marker")
        await bob.locator("#chat-log .entry.msg", has_text="marker").wait_for(timeout=WAIT)
        for page in (alice, bob):
            assert await page.locator("#chat-log .event", has_text="left").count() == 0
        assert alice.errors == [] and bob.errors == []


@pytest.mark.parametrize("transport", ["websocket", "sse", "long-polling"])
async def test_a_first_message_in_an_empty_room_is_not_called_missing(
        http_server_client, transport):
    """Bob waits in an empty room; Alice's first message reaches him with no "some messages
    may be missing" notice, over every transport."""
    url = http_server_client.get_url("/chat")
    room = f"empty-{transport}"
    async with chromium() as browser:
        bob = await open_chat(browser, url, "bob", room, block=BLOCKS[transport])
        alice = await open_chat(browser, url, "alice", room)
        await say(alice, "the very first")
        await bob.locator("#chat-log .entry.msg", has_text="the very first").wait_for(
            timeout=WAIT)
        await say(alice, "the second")
        await bob.locator("#chat-log .entry.msg", has_text="the second").wait_for(timeout=WAIT)
        assert await bob.locator("#chat-log .event.warn").count() == 0
        assert await bob.locator("#chat-log .event", has_text="Reconnected").count() == 0
        assert bob.errors == []
