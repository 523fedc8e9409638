"""Chat over HTTP across two real server processes on one real Redis (tests/cluster.py)."""

import asyncio
import json
import time

from tornado.httpclient import AsyncHTTPClient

from tests.eventstream import EventStream
from tests.support import TIMEOUT

ALICE = "alice-browser-0123456789"  # chat cookies, as /chat hands them out
BOB = "bob-browser-0123456789ab"


async def test_a_message_posted_on_a_reaches_a_stream_and_a_held_poll_on_b(cluster):
    """A POST on process A reaches an event stream and a held long-poll on process B."""
    a, b = await cluster.start(2)
    client = AsyncHTTPClient()
    first = json.loads((await client.fetch(
        a.url("/poll/chat/lobby"), method="POST", body=json.dumps({"text": "before"}),
        headers={"Content-Type": "application/json", "Cookie": f"chat_id={ALICE}"})).body)
    stream = await EventStream.open(b.port, "/sse/chat/lobby")
    try:
        assert (await stream.frame())["history"] == [first]
        await cluster.wait_subscribed("chat.lobby", 1)
        waiting = asyncio.ensure_future(client.fetch(
            b.url(f"/poll/chat/lobby?since={first['id']}"),
            headers={"Cookie": f"chat_id={BOB}"}, request_timeout=TIMEOUT * 2))

        async def connections() -> int:
            return json.loads((await client.fetch(b.url("/healthz"))).body)["connections"]

        # The stream and the held request are B's connections (no event says so outside).
        deadline = time.monotonic() + TIMEOUT
        while await connections() < 2:
            assert time.monotonic() < deadline, "B never held the long-poll"
            await asyncio.sleep(0.02)
        assert not waiting.done()
        sent = json.loads((await client.fetch(
            a.url("/poll/chat/lobby"), method="POST",
            body=json.dumps({"text": "from A", "nick": "alice"}),
            headers={"Content-Type": "application/json", "Cookie": f"chat_id={ALICE}"})).body)
        event = await stream.event()
        while event.id is None:  # presence: alice joined on A
            event = await stream.event()
        assert event.json() == sent and event.id == str(sent["id"])
        answer = json.loads((await waiting).body)
        assert answer == {"messages": [sent], "last_id": sent["id"], "recovered": True}
    finally:
        stream.close()
