"""Voting across two real server processes on one real Redis (tests/cluster.py): tallies
cross, one voter counts once wherever it votes, and polls and votes show on every process."""

import asyncio
import json
import time
from typing import Any, Optional

from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import WebSocketClientConnection as Client

from tests.cluster import Node, on_both_redis
from tests.support import receive_json, receive_type, send_json
from tests.votes.test_participants import participants, viewers

ONE_VOTE = {"title": "Pick one", "options": ["a", "b"], "one_vote_per_voter": True}
EVERY_CLICK = {"title": "Click away", "options": ["a", "b"], "one_vote_per_voter": False}
SEEN_WITHIN = 1.0  # seconds from a vote's acknowledgement on one process to the API of another


async def fetch_json(url: str, **kwargs: Any) -> Any:
    """The JSON body of a successful request."""
    response = await AsyncHTTPClient().fetch(url, **kwargs)
    return json.loads(response.body) if response.body else None


async def create_poll(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/polls`` on ``node``: the new poll with its ``manage_token``."""
    return await fetch_json(node.url("/api/polls"), method="POST", body=json.dumps(body),
                            headers={"Content-Type": "application/json"})


async def voter_cookie(node: Node, poll_id: str) -> dict[str, str]:
    """Load the poll's page on ``node`` like a browser; the Cookie header it would send."""
    response = await AsyncHTTPClient().fetch(node.url(f"/vote/{poll_id}"))
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


async def open_poll(ws_open: Any, node: Node, poll_id: str,
                    headers: Optional[dict[str, str]] = None) -> tuple[Client, dict[str, Any]]:
    """A vote socket on ``node`` and its first frame, the poll."""
    conn = await ws_open(node.ws_url(f"/ws/vote/{poll_id}"), headers)
    first = await receive_json(conn)
    assert first["type"] == "poll"
    return conn, first


async def outcome(conn: Client) -> tuple[str, list[dict[str, Any]]]:
    """Read until the vote's answer: ``"voted"`` or the error's code, and the tallies that
    came before it."""
    tallies = []
    while True:
        message = await receive_json(conn)
        if message["type"] == "tally":
            tallies.append(message)
        elif message["type"] in ("voted", "error"):
            return message.get("code", "voted"), tallies


@on_both_redis
async def test_a_vote_on_one_process_reaches_a_socket_on_the_other(cluster, ws_open):
    """A vote through A's /ws/vote/<id> reaches a voter socket connected to B as its tally."""
    a, b = await cluster.start(2)
    poll = await create_poll(a, EVERY_CLICK)
    watcher, _ = await open_poll(ws_open, b, poll["id"])
    await cluster.wait_subscribed(f"vote.{poll['id']}", 1)  # B listens on Redis
    voter, _ = await open_poll(ws_open, a, poll["id"])
    await send_json(voter, {"type": "vote", "option": "2"})
    expected = {"type": "tally", "poll": poll["id"], "votes": {"1": 0, "2": 1}, "total": 1}
    assert (await receive_type(voter, "voted"))["tally"] == expected
    assert await receive_type(watcher, "tally") == expected


@on_both_redis
async def test_one_voter_voting_on_both_processes_at_once_counts_once(cluster, ws_open):
    """The same voter (same cookie) voting at the same instant through A and B in a one-vote
    poll counts once: one ``voted``, one ``already_voted``, a total of 1 everywhere."""
    a, b = await cluster.start(2)
    for _ in range(5):
        poll_id = (await create_poll(a, ONE_VOTE))["id"]
        cookie = await voter_cookie(b, poll_id)  # issued by B, valid on A: one secret
        tabs = [(await open_poll(ws_open, node, poll_id, cookie))[0] for node in (a, b)]
        await cluster.wait_subscribed(f"vote.{poll_id}", 2)
        await asyncio.gather(*(send_json(tab, {"type": "vote", "option": option})
                               for tab, option in zip(tabs, ("1", "2"))))
        answers = await asyncio.gather(*map(outcome, tabs))
        assert sorted(code for code, _ in answers) == ["already_voted", "voted"]
        for tab, (_, tallies) in zip(tabs, answers):
            tally = tallies[0] if tallies else await receive_type(tab, "tally")
            assert tally["total"] == 1
        for node in (a, b):
            assert (await fetch_json(node.url(f"/api/polls/{poll_id}")))["total"] == 1


async def test_a_vote_acknowledged_on_one_process_shows_in_the_others_api(cluster, ws_open):
    """Once A acknowledges a vote, GET /api/polls/<id> on B counts it within 1 s."""
    a, b = await cluster.start(2)
    poll_id = (await create_poll(b, EVERY_CLICK))["id"]
    voter, _ = await open_poll(ws_open, a, poll_id)
    for n in range(1, 6):
        await send_json(voter, {"type": "vote", "option": "1"})
        assert (await receive_type(voter, "voted"))["tally"]["total"] == n
        acknowledged = time.monotonic()
        while (await fetch_json(b.url(f"/api/polls/{poll_id}")))["total"] < n:
            assert time.monotonic() - acknowledged < SEEN_WITHIN, f"vote {n} not on B"
            await asyncio.sleep(0.02)


@on_both_redis
async def test_a_poll_created_on_one_process_is_usable_on_the_other(cluster, ws_open):
    """A poll made by POST /api/polls on A is listed, shown, voted in and managed on B, and
    its state changes reach A's sockets."""
    a, b = await cluster.start(2)
    created = await create_poll(a, {**ONE_VOTE, "listed": True})
    poll_id, token = created["id"], created.pop("manage_token")
    assert await fetch_json(b.url(f"/api/polls/{poll_id}")) == created
    listed = (await fetch_json(b.url("/api/polls")))["polls"]
    assert [poll["id"] for poll in listed] == [poll_id, "demo"]

    cookie = await voter_cookie(b, poll_id)  # the page on B
    on_b, first = await open_poll(ws_open, b, poll_id, cookie)
    assert first["poll"] == created and first["voted"] is None
    await send_json(on_b, {"type": "vote", "option": "2"})
    assert (await receive_type(on_b, "voted"))["tally"]["votes"] == {"1": 0, "2": 1}

    on_a, first = await open_poll(ws_open, a, poll_id, cookie)
    assert first["voted"] == "2" and first["poll"]["total"] == 1
    await cluster.wait_subscribed(f"vote.{poll_id}", 2)
    closed = await fetch_json(b.url(f"/api/polls/{poll_id}/close"), method="POST", body="",
                              headers={"Authorization": f"Bearer {token}"})
    assert closed["closed"] is True
    assert await receive_type(on_a, "closed") == {"type": "closed", "poll": poll_id}
    await send_json(on_a, {"type": "vote", "option": "1"})
    assert (await receive_type(on_a, "error"))["code"] == "poll_closed"


@on_both_redis
async def test_viewers_on_both_processes_add_up_and_leave(cluster, ws_open):
    """A page on A counts the pages on B among the poll's viewers: 2 once B's page opens, 1
    again once it closes."""
    a, b = await cluster.start(2)
    poll_id = (await create_poll(a, EVERY_CLICK))["id"]
    watcher, _ = await open_poll(ws_open, a, poll_id)
    await participants(watcher, viewers(1))  # A's count is in Redis
    await cluster.wait_subscribed(f"vote.{poll_id}", 1)  # A hears what B publishes
    other, _ = await open_poll(ws_open, b, poll_id)
    await participants(watcher, viewers(2))
    await participants(other, viewers(2))
    other.close()
    await participants(watcher, viewers(1))
