"""The live participant count of a poll (the ``participants`` frame): voters who voted and
viewers connected, from the store on SQLite and on Redis, and over real sockets and event
streams on each backend (``polls_on``)."""

import asyncio
import time
from typing import Any, Callable

import pytest

from realtime.pubsub.hub import Hub
from realtime.votes.participants import ParticipantCounts
from realtime.votes.spec import NewPoll
from realtime.votes.store import PollStore
from server import Config
from tests.support import (
    TIMEOUT, RecordingConnection, poll_until, receive_json, receive_type, send_json)
from tests.test_vote_socket import ONE_VOTE, create_poll, open_poll, voter_cookie
from tests import test_vote_sse
from tests.votes import test_redispolls
from tests.votes.test_redispolls import EVERY_CLICK

# The fixtures of those modules: an event stream, and a store of each kind.
sse = test_vote_sse.sse
redis_stores = test_redispolls.redis_stores
store = test_redispolls.store

HIDDEN = {"title": "Secret", "options": ["a", "b"], "results": "hidden",
          "one_vote_per_voter": False}


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


async def participants(conn: Any, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Read frames until a ``participants`` frame that ``wanted`` accepts (counts coalesce,
    so a frame in between may carry counts on their way there)."""
    while True:
        frame = await receive_json(conn)
        if frame["type"] == "participants" and wanted(frame):
            return frame


def viewers(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["viewers"] == n


# The store's count.

async def test_store_counts_distinct_voters_of_a_one_vote_poll(store):
    """A one-vote poll's voters are its distinct voters; the viewers given come back."""
    poll, _ = await store.create(NewPoll("Pick", ("a", "b"), one_vote_per_voter=True,
                                         allow_change=True))
    await store.vote(poll.id, "1", "alice")
    await store.vote(poll.id, "2", "bob")
    await store.vote(poll.id, "1", "bob")  # a change of vote: still one voter
    assert await store.participants(poll.id, 3, 30) == (2, 3)


async def test_store_counts_the_votes_of_an_every_click_poll(store):
    """An every-click poll knows no voters: its voters count is its votes."""
    poll, _ = await store.create(EVERY_CLICK)
    for option in ("1", "1", "2"):
        await store.vote(poll.id, option, None)
    assert await store.participants(poll.id, 0, 30) == (3, 0)


async def test_store_has_no_participants_for_an_unknown_poll(store):
    """An unknown poll has no count (None), not zeros."""
    assert await store.participants("nope", 1, 30) is None


async def test_viewers_of_two_processes_add_up_on_redis(redis_server, redis_stores):
    """Two processes' viewers of one poll add up; a process back at 0 drops out."""
    first, second = redis_stores(redis_server.url), redis_stores(redis_server.url)
    poll, _ = await first.create(EVERY_CLICK)
    assert await first.participants(poll.id, 2, 30) == (0, 2)
    assert await second.participants(poll.id, 3, 30) == (0, 5)
    assert await first.participants(poll.id, 0, 30) == (0, 3)


async def test_a_process_that_stops_refreshing_drops_out_of_the_viewers(
        redis_server, redis_stores):
    """A process's viewers count only as long as it said they do (a crashed process's
    viewers disappear): past its deadline, another process's count leaves them out."""
    crashed, alive = redis_stores(redis_server.url), redis_stores(redis_server.url)
    poll, _ = await alive.create(EVERY_CLICK)
    assert await crashed.participants(poll.id, 4, 0.2) == (0, 4)
    assert await alive.participants(poll.id, 1, 30) == (0, 5)
    deadline = time.monotonic() + TIMEOUT
    while (await alive.participants(poll.id, 1, 30)) != (0, 1):
        assert time.monotonic() < deadline, "the stale count never expired"
        await asyncio.sleep(0.05)


# Coalescing, without a server.

async def test_a_burst_of_changes_is_one_frame_with_the_count_it_ends_at():
    """Fifty pages opening in one turn of the loop cost one participants frame (carrying 50),
    and one more page one more frame (51), not fifty."""
    hub, store = Hub(), PollStore(None)
    await store.start()
    counts = ParticipantCounts(hub, store, interval=0.05)
    pages = [RecordingConnection(hub) for _ in range(50)]
    try:
        for page in pages:
            page.subscribe("vote.demo")
            counts.changed("demo")
        await poll_until(lambda: len(pages[0].frames) >= 1)
        RecordingConnection(hub).subscribe("vote.demo")  # one more page, told once
        counts.changed("demo")
        await poll_until(lambda: pages[0].frames[-1]["viewers"] == 51)
        told = {"type": "participants", "poll": "demo", "voters": 0}
        assert pages[0].frames == [{**told, "viewers": 50}, {**told, "viewers": 51}]
    finally:
        await counts.aclose()
        await store.aclose()


# Over the transports.

async def test_viewers_go_up_and_down_as_sockets_open_and_close(http_server_client,
                                                                ws_connect):
    """A page of a poll hears the viewers count rise as another page opens it and fall as
    that page closes."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    first, _ = await open_poll(ws_connect, poll_id)
    assert (await participants(first, viewers(1)))["poll"] == poll_id
    second, _ = await open_poll(ws_connect, poll_id)
    await participants(first, viewers(2))
    await participants(second, viewers(2))
    second.close()
    await participants(first, viewers(1))


async def test_an_event_stream_counts_as_a_viewer(http_server_client, ws_connect, sse):
    """An event stream of the poll is a viewer while it is open, and gets the counts too."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    page, _ = await open_poll(ws_connect, poll_id)
    await participants(page, viewers(1))
    stream = await sse(f"/sse/vote/{poll_id}")
    await participants(page, viewers(2))
    frame = await stream.frame_of("participants")
    assert frame["viewers"] >= 1  # 1 or 2, as the frames of its arrival coalesced
    stream.close()
    await participants(page, viewers(1))


async def test_voters_count_after_votes_but_not_a_voter_twice(http_server_client,
                                                              ws_connect):
    """Each new voter of a one-vote poll raises the voters count; a voter refused a second
    vote does not."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    watcher, _ = await open_poll(ws_connect, poll_id)
    for n in (1, 2):
        cookie = await voter_cookie(http_server_client, poll_id)
        voter, _ = await open_poll(ws_connect, poll_id, cookie)
        await send_json(voter, {"type": "vote", "option": "1"})
        await participants(watcher, lambda frame, n=n: frame["voters"] == n)
    await send_json(voter, {"type": "vote", "option": "2"})
    assert (await receive_type(voter, "error"))["code"] == "already_voted"
    voter.close()  # watcher and the first voter's page are left
    assert (await participants(watcher, viewers(2)))["voters"] == 2


async def test_a_vote_through_the_api_counts_a_voter(http_server_client, ws_connect):
    """A vote through POST /api/polls/<id>/vote reaches the pages as a new voter."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    page, _ = await open_poll(ws_connect, poll_id)
    cookie = await voter_cookie(http_server_client, poll_id)
    await http_server_client.fetch(
        f"/api/polls/{poll_id}/vote", method="POST", body='{"option": "2"}',
        headers={**cookie, "Content-Type": "application/json"})
    assert (await participants(page, lambda frame: frame["voters"] == 1))["viewers"] == 1


async def test_a_hidden_poll_tells_counts_of_people_never_of_options(http_server_client,
                                                                     ws_connect):
    """While results are hidden the participants frame says how many, never which option."""
    poll_id = await create_poll(http_server_client, HIDDEN)
    page, _ = await open_poll(ws_connect, poll_id)
    await send_json(page, {"type": "vote", "option": "1"})
    frame = await participants(page, lambda frame: frame["voters"] == 1)
    assert set(frame) == {"type", "poll", "voters", "viewers"}


async def test_pages_hear_when_a_crashed_processs_viewers_expire(redis_server, redis_stores):
    """A process that stops refreshing (it crashed) leaves the count once its viewers'
    validity is over: the other process's pages are told without any change of their own."""
    crashed_hub, alive_hub = Hub(), Hub()
    crashed = ParticipantCounts(crashed_hub, redis_stores(redis_server.url), refresh=1.0)
    alive = ParticipantCounts(alive_hub, redis_stores(redis_server.url), refresh=0.1)
    poll, _ = await alive.store.create(EVERY_CLICK)
    topic = f"vote.{poll.id}"
    crashed_page = RecordingConnection(crashed_hub)
    crashed_page.subscribe(topic)
    crashed.changed(poll.id)
    page = RecordingConnection(alive_hub)
    page.subscribe(topic)
    try:
        await poll_until(lambda: bool(crashed_page.frames))  # its viewer is recorded
        await crashed.aclose()  # no more refreshes: its count lasts 3 s at most
        alive.changed(poll.id)
        await poll_until(lambda: bool(page.frames))
        assert page.frames[0]["viewers"] == 2
        await poll_until(lambda: page.frames[-1]["viewers"] == 1, timeout=3 + TIMEOUT)
    finally:
        await alive.aclose()
