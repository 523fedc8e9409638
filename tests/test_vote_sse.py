"""/sse/vote/<id> over real sockets: the poll first, then what the vote socket broadcasts,
on SQLite and on Redis (``polls_on``)."""

import json

import pytest

from server import Config
from tests.eventstream import EventStream
from tests.support import port_of, receive_type, send_json
from tests.test_vote_socket import ONE_VOTE, create_poll, open_poll, voter_cookie


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


@pytest.fixture
def sse(http_server_client):
    """``await sse(path, headers)``: an event stream to the test server, closed after."""
    opened: list[EventStream] = []

    async def open_stream(path: str, headers=None) -> EventStream:
        stream = await EventStream.open(port_of(http_server_client), path, headers)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


async def test_the_poll_comes_first_then_every_tally(sse, ws_connect):
    """The stream starts with the poll frame, then carries the tally of a vote cast on the
    socket, the same frame the socket gets, as an event without an id."""
    stream = await sse("/sse/vote/demo")
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    first = await stream.frame_except("participants")
    assert first["type"] == "poll" and first["poll"]["id"] == "demo" and first["voted"] is None
    conn, _ = await open_poll(ws_connect, "demo")
    await send_json(conn, {"type": "vote", "option": "2"})
    tally = await receive_type(conn, "tally")
    event = await stream.event()
    while event.json()["type"] == "participants":  # the counts of the pages coming and going
        event = await stream.event()
    assert event.id is None and event.json() == tally


async def test_the_poll_frame_says_how_this_voter_voted(sse, ws_connect, http_server_client):
    """A one-vote poll's first event carries this browser's vote (its voter cookie)."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    cookie = await voter_cookie(http_server_client, poll_id)
    conn, _ = await open_poll(ws_connect, poll_id, cookie)
    await send_json(conn, {"type": "vote", "option": "1"})
    await receive_type(conn, "voted")
    stream = await sse(f"/sse/vote/{poll_id}", cookie)
    assert (await stream.frame_except("participants"))["voted"] == "1"


async def test_closing_and_deleting_reach_the_stream(sse, http_server_client):
    """The creator's close and delete reach the stream as closed and deleted events."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", body=json.dumps(ONE_VOTE),
        headers={"Content-Type": "application/json"})
    poll = json.loads(response.body)
    auth = {"Authorization": f"Bearer {poll['manage_token']}"}
    stream = await sse(f"/sse/vote/{poll['id']}")
    await stream.frame_except("participants")
    await http_server_client.fetch(f"/api/polls/{poll['id']}/close", method="POST", body=b"",
                                   headers=auth)
    assert await stream.frame_except("participants") == {"type": "closed", "poll": poll["id"]}
    await http_server_client.fetch(f"/api/polls/{poll['id']}", method="DELETE", headers=auth)
    assert await stream.frame_except("participants") == {"type": "deleted", "poll": poll["id"]}


async def test_an_unknown_poll_is_a_404_before_the_stream(sse):
    """No such poll: a JSON 404, not an event stream."""
    stream = await sse("/sse/vote/nope")
    assert stream.status == 404
    assert stream.headers["content-type"].startswith("application/json")
