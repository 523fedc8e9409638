"""The chat page where WebSockets do not get through, in a real headless Chromium: it falls
back to Server-Sent Events and POST, or to long-polling and POST, says which, and chats."""

import pytest

from handlers.chathttp import ChatEventStreamHandler
from realtime.pubsub.delivery import CloseReason
from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: three refused handshakes with backoff come first

# A proxy that does not pass WebSocket upgrades answers the handshake with a plain HTTP
# error: every chat socket of the page goes to a path that is not one (404).
REFUSE_WEBSOCKETS = """(() => {
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(url, protocols) { super(url.replace("/ws/chat/", "/ws/refused/"), protocols); }
  };
})();"""
# A browser without WebSocket, then one without EventSource either.
NO_WEBSOCKET = "delete window.WebSocket;"
NO_STREAMS = "delete window.WebSocket; delete window.EventSource;"


async def open_chat(browser, url, nick, room, block=None, fake_clock=False):
    """A person in their own browser context on the chat page as ``nick``, its WebSockets
    (and more) taken away by the ``block`` script if given; with ``fake_clock``, the page's
    timers run on Playwright's clock (``page.clock.run_for``) as well as in real time."""
    context = await browser.new_context()
    if block:
        await context.add_init_script(block)
    page = await context.new_page()
    if fake_clock:
        await page.clock.install()
    page.errors = collect_console_errors(page)
    await page.goto(f"{url}?room={room}&nick={nick}")
    await wait_connected(page)
    await page.locator("#chat-log .event", has_text=f"You joined as {nick}").wait_for(
        timeout=WAIT)
    return page


async def say(page, text):
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")


async def transport(page):
    """What the label beside the connection state says."""
    return await page.locator("#conn-transport").text_content()


async def test_refused_websocket_falls_back_to_server_sent_events(http_server_client):
    """Bob's WebSocket handshakes are refused: his page says it uses Server-Sent Events,
    Alice sees him online, and messages go both ways."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", "sse")
        bob = await open_chat(browser, url, "bob", "sse", block=REFUSE_WEBSOCKETS)
        assert await transport(bob) == "via Server-Sent Events"
        assert await transport(alice) == "via WebSocket"
        await alice.locator("#chat-online .name", has_text="bob").wait_for(timeout=WAIT)

        await say(bob, "hello from the fallback")
        line = alice.locator("#chat-log .entry.msg", has_text="hello from the fallback")
        await line.wait_for(timeout=WAIT)
        assert await line.locator(".who").text_content() == "bob"
        await bob.locator("#chat-log .entry.mine", has_text="hello from the fallback").wait_for(
            timeout=WAIT)

        await say(alice, "hello back")
        await bob.locator("#chat-log .entry.msg", has_text="hello back").wait_for(timeout=WAIT)
        sent = bob.locator("#chat-log .entry", has_text="hello from the fallback")
        assert await sent.count() == 1  # the POST's answer and the stream's event are one
        assert alice.errors == []


async def test_private_messages_cross_the_fallback_both_ways(http_server_client):
    """Over Server-Sent Events and POST, Bob gets Alice's private message and answers
    privately; Carol sees neither."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", "private")
        bob = await open_chat(browser, url, "bob", "private", block=NO_WEBSOCKET)
        carol = await open_chat(browser, url, "carol", "private")
        assert await transport(bob) == "via Server-Sent Events"

        await alice.locator("#chat-online .name", has_text="bob").click()
        await say(alice, "psst, bob")
        await bob.locator("#chat-log .entry.private", has_text="psst, bob").wait_for(
            timeout=WAIT)
        await bob.locator("#chat-online .name", has_text="alice").click()
        await say(bob, "psst back")
        await alice.locator("#chat-log .entry.private", has_text="psst back").wait_for(
            timeout=WAIT)
        await bob.locator("#chat-log .entry.private.mine", has_text="psst back").wait_for(
            timeout=WAIT)

        await say(carol, "marker")  # the room delivers in order: the secrets would be first
        await carol.locator("#chat-log .entry.msg", has_text="marker").wait_for(timeout=WAIT)
        assert await carol.locator("#chat-log", has_text="psst").count() == 0
        assert bob.errors == []


async def test_without_event_streams_the_page_long_polls(http_server_client):
    """With neither WebSocket nor EventSource, the page long-polls, says so, and sends and
    receives under its nickname."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", "polls")
        bob = await open_chat(browser, url, "bob", "polls", block=NO_STREAMS)
        assert await transport(bob) == "via long-polling"
        await bob.locator("#chat-readers", has_text="long-polling").wait_for(timeout=WAIT)

        await say(alice, "are you polling?")
        await bob.locator("#chat-log .entry.msg", has_text="are you polling?").wait_for(
            timeout=WAIT)
        await say(bob, "every time")
        line = alice.locator("#chat-log .entry.msg", has_text="every time")
        await line.wait_for(timeout=WAIT)
        assert await line.locator(".who").text_content() == "bob"
        assert bob.errors == []


async def test_message_the_fallback_could_not_post_returns_to_the_box(http_server_client):
    """Over Server-Sent Events a POST that never reaches the server says so, and the text is
    back in the message box to send again."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        bob = await open_chat(browser, url, "bob", "unsent", block=NO_WEBSOCKET)
        await bob.route("**/poll/chat/**", lambda route: route.abort())
        await say(bob, "lost in transit")
        await bob.locator("#chat-notice", has_text="could not be reached").wait_for(
            timeout=WAIT)
        assert await bob.input_value("#chat-text") == "lost in transit"
        assert await bob.locator("#chat-log .entry", has_text="lost in transit").count() == 0


async def test_fallback_reconnects_without_losing_messages(http_server_client, hub):
    """The server ends Bob's event stream and his page cannot get back for a while; what
    Alice says meanwhile reaches Bob once he is back, as a replay (?since=), once."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", "again")
        bob = await open_chat(browser, url, "bob", "again", block=NO_WEBSOCKET)
        await say(alice, "before the drop")
        await bob.locator("#chat-log .entry.msg", has_text="before the drop").wait_for(
            timeout=WAIT)

        await bob.route("**/sse/chat/**", lambda route: route.abort())
        for connection in list(hub.connections):
            if isinstance(connection, ChatEventStreamHandler):
                connection.close_for(CloseReason.SHUTDOWN)
        await bob.wait_for_selector('#conn-state:not([data-state="open"])', timeout=WAIT)
        await say(alice, "while bob was away")
        await alice.locator("#chat-log .entry.mine", has_text="while bob was away").wait_for(
            timeout=WAIT)
        await bob.unroute("**/sse/chat/**")
        await wait_connected(bob)

        await bob.locator("#chat-log .event", has_text="Reconnected: 1 missed").wait_for(
            timeout=WAIT)
        await bob.locator("#chat-log .entry.msg", has_text="while bob was away").wait_for(
            timeout=WAIT)
        assert await bob.locator("#chat-log .entry.msg", has_text="before the drop").count() == 1
        assert await transport(bob) == "via Server-Sent Events"
