"""The /ws/vote/<id> endpoint over real sockets: snapshot, tallies, errors, one vote each."""

import asyncio
import base64
import json
import os
import socket
import struct
import threading

import pytest
from tornado.httpclient import HTTPClientError

from handlers.vote import VoteSocketHandler
from realtime.pubsub.brokers import LocalBroker
from realtime.pubsub.envelope import Envelope
from realtime.pubsub.hub import Hub
from realtime.votes.store import PollStore
from server import Config, make_app
from tests.support import (
    TIMEOUT, port_of, receive_json_except, receive_type, send_json)

ONE_VOTE = {"title": "Pick one", "options": ["a", "b"], "one_vote_per_voter": True}


async def next_frame(conn):
    """The next frame besides the ``participants`` counts, which follow every page that
    opens or closes (tests/votes/test_participants.py is about those)."""
    return await receive_json_except(conn, "participants")


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


async def create_poll(client, body) -> str:
    response = await client.fetch(
        "/api/polls", method="POST", body=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(response.body)["id"]


async def voter_cookie(client, poll_id: str) -> dict[str, str]:
    """Load the poll page like a browser and return the Cookie header it would send."""
    response = await client.fetch(f"/vote/{poll_id}")
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


async def open_poll(ws_connect, poll_id: str, headers=None):
    """Connect to a poll and read its snapshot."""
    conn = await ws_connect(f"/ws/vote/{poll_id}", headers)
    first = await next_frame(conn)
    assert first["type"] == "poll"
    return conn, first


async def test_first_frame_is_the_poll_snapshot(ws_connect):
    """A new connection first gets the poll with its counts."""
    _, first = await open_poll(ws_connect, "demo")
    assert first["poll"]["id"] == "demo"
    assert [o["label"] for o in first["poll"]["options"]] == ["钢弹", "铁锤", "贝贝"]
    assert first["voted"] is None


async def test_snapshot_includes_earlier_votes(ws_connect):
    """A client connecting after votes sees them counted."""
    voter, _ = await open_poll(ws_connect, "demo")
    await send_json(voter, {"type": "vote", "option": "3"})
    await receive_type(voter, "tally")
    _, first = await open_poll(ws_connect, "demo")
    assert first["poll"]["options"][2]["votes"] == 1 and first["poll"]["total"] == 1


async def test_vote_sends_the_tally_to_every_client(ws_connect):
    """After a vote every client of the poll, the voter included, gets the full counts."""
    voter, _ = await open_poll(ws_connect, "demo")
    watchers = [(await open_poll(ws_connect, "demo"))[0] for _ in range(2)]
    await send_json(voter, {"type": "vote", "option": "2"})
    expected = {"type": "tally", "poll": "demo", "votes": {"1": 0, "2": 1, "3": 0}, "total": 1}
    for conn in [voter, *watchers]:
        assert await next_frame(conn) == expected


async def test_voter_gets_voted_with_the_tally_that_counts_it(ws_connect):
    """The voter gets a voted frame naming its option and carrying the counts with its
    vote in them."""
    voter, first = await open_poll(ws_connect, "demo")
    await send_json(voter, {"type": "vote", "option": "1"})
    voted = await receive_type(voter, "voted")
    assert voted["option"] == "1"
    assert voted["tally"]["type"] == "tally" and voted["tally"]["poll"] == "demo"
    assert voted["tally"]["total"] == first["poll"]["total"] + 1


class HeldBroker(LocalBroker):
    """A broker whose deliveries wait until the test lets them go, as a networked one may."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[str, Envelope]] = []

    def publish(self, topic: str, envelope: Envelope) -> None:
        self.held.append((topic, envelope))


async def test_the_acknowledgement_does_not_wait_for_the_broadcast(start_server, ws_open):
    """With the broadcast tally still on its way, the voter is already told its vote counted,
    with the counts that include it."""
    broker = HeldBroker()
    app = make_app(Config(hub=Hub(broker=broker)))
    port = start_server(app)
    try:
        voter = await ws_open(f"ws://127.0.0.1:{port}/ws/vote/demo")
        assert (await next_frame(voter))["type"] == "poll"
        await send_json(voter, {"type": "vote", "option": "1"})
        voted = await next_frame(voter)
        assert voted["type"] == "voted" and voted["tally"]["votes"]["1"] == 1
        tallies = [topic for topic, envelope in broker.held
                   if b'"participants"' not in envelope.data]  # the viewer's count is held too
        assert tallies == ["vote.demo"]
    finally:
        app.settings["polls"].close()


async def test_tally_does_not_reach_other_polls(ws_connect, http_server_client):
    """A vote in one poll sends nothing to the clients of another."""
    other_id = await create_poll(
        http_server_client, {"title": "Other", "options": ["x", "y"], "one_vote_per_voter": False})
    other, _ = await open_poll(ws_connect, other_id)
    voter, _ = await open_poll(ws_connect, "demo")
    await send_json(voter, {"type": "vote", "option": "1"})
    await receive_type(voter, "voted")
    await send_json(other, {"type": "vote", "option": "2"})
    tally = await next_frame(other)
    assert tally["poll"] == other_id and tally["total"] == 1


@pytest.mark.parametrize("option", ["9", "", "1 ", "label"])
async def test_unknown_option_gets_no_such_option(ws_connect, option):
    """A vote for an option the poll does not have is refused and the socket stays."""
    conn, _ = await open_poll(ws_connect, "demo")
    await send_json(conn, {"type": "vote", "option": option})
    assert (await next_frame(conn))["code"] == "no_such_option"
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await next_frame(conn))["total"] == 1


@pytest.mark.parametrize("option", [None, 1, ["1"]])
async def test_option_that_is_not_a_string_gets_bad_message(ws_connect, option):
    """A vote whose option is missing or not a string is bad_message."""
    conn, _ = await open_poll(ws_connect, "demo")
    await send_json(conn, {"type": "vote", "option": option})
    assert (await next_frame(conn))["code"] == "bad_message"


@pytest.mark.parametrize("path", ["/ws/vote/nope", "/ws/vote/" + "x" * 500])
async def test_unknown_poll_is_a_404_at_the_handshake(ws_connect, path):
    """Connecting to a poll that does not exist fails with 404 before any frame."""
    with pytest.raises(HTTPClientError) as caught:
        await ws_connect(path)
    assert caught.value.code == 404


async def test_one_vote_poll_without_cookie_gets_no_voter_id(ws_connect, http_server_client):
    """A one-vote poll refuses a vote from a connection without a voter cookie."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    conn, _ = await open_poll(ws_connect, poll_id)
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await next_frame(conn))["code"] == "no_voter_id"


async def test_forged_cookie_gets_no_voter_id(ws_connect, http_server_client):
    """A voter cookie that is not signed by this server does not count as a voter."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    conn, _ = await open_poll(ws_connect, poll_id, {"Cookie": "voter=alice"})
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await next_frame(conn))["code"] == "no_voter_id"


async def test_one_vote_poll_refuses_a_second_vote_of_the_same_cookie(
    ws_connect, http_server_client
):
    """The same voter cookie votes once, even from a new connection, and the snapshot says so."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    cookie = await voter_cookie(http_server_client, poll_id)
    conn, _ = await open_poll(ws_connect, poll_id, cookie)
    await send_json(conn, {"type": "vote", "option": "1"})
    await receive_type(conn, "voted")

    again, first = await open_poll(ws_connect, poll_id, cookie)
    assert first["voted"] == "1"
    await send_json(again, {"type": "vote", "option": "2"})
    assert (await next_frame(again))["code"] == "already_voted"


async def test_concurrent_votes_of_one_cookie_count_once(ws_connect, http_server_client):
    """Two connections with one cookie voting at the same instant: one counts, one is refused."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    cookie = await voter_cookie(http_server_client, poll_id)
    tabs = [(await open_poll(ws_connect, poll_id, cookie))[0] for _ in range(2)]
    await asyncio.gather(*(send_json(tab, {"type": "vote", "option": "1"}) for tab in tabs))

    async def outcome(tab) -> str:
        while True:
            message = await next_frame(tab)
            if message["type"] in ("voted", "error"):
                return message.get("code", "voted")

    assert sorted(await asyncio.gather(*map(outcome, tabs))) == ["already_voted", "voted"]
    poll = json.loads((await http_server_client.fetch(f"/api/polls/{poll_id}")).body)
    assert poll["total"] == 1


async def test_one_vote_poll_counts_two_different_cookies(ws_connect, http_server_client):
    """Two browsers (two cookies) each get their vote counted."""
    poll_id = await create_poll(http_server_client, ONE_VOTE)
    for option in ["1", "2"]:
        cookie = await voter_cookie(http_server_client, poll_id)
        conn, _ = await open_poll(ws_connect, poll_id, cookie)
        await send_json(conn, {"type": "vote", "option": option})
        await receive_type(conn, "voted")
    poll = json.loads((await http_server_client.fetch(f"/api/polls/{poll_id}")).body)
    assert [o["votes"] for o in poll["options"]] == [1, 1]


# SQLite only: it holds the SQLite store's worker thread inside a vote.
@pytest.mark.parametrize("polls_on", ["embedded"], indirect=True)
async def test_vote_committed_while_a_client_joins_is_in_its_snapshot_not_a_tally(
    ws_connect, monkeypatch
):
    """A vote in flight as a client joins shows in its poll frame, which still comes first."""
    voter, _ = await open_poll(ws_connect, "demo")
    hold, held = threading.Event(), threading.Event()
    commit, take_snapshot = PollStore._vote, PollStore.snapshot
    join = VoteSocketHandler.connected

    def held_vote(self, *args):
        held.set()
        hold.wait(TIMEOUT)  # the worker thread sits inside this vote's job
        return commit(self, *args)

    async def connected_during_a_vote(self, poll_id):
        monkeypatch.setattr(PollStore, "_vote", held_vote)
        await send_json(voter, {"type": "vote", "option": "1"})
        await asyncio.to_thread(held.wait, TIMEOUT)
        monkeypatch.setattr(PollStore, "_vote", commit)
        await join(self, poll_id)

    async def snapshot_then_release(self, *args):
        pending = asyncio.ensure_future(take_snapshot(self, *args))
        await asyncio.sleep(0)  # its job is now queued behind the held vote
        hold.set()
        return await pending

    monkeypatch.setattr(VoteSocketHandler, "connected", connected_during_a_vote)
    monkeypatch.setattr(PollStore, "snapshot", snapshot_then_release)
    joiner, first = await open_poll(ws_connect, "demo")  # asserts the first frame is "poll"
    assert first["poll"]["total"] == 1

    await send_json(voter, {"type": "vote", "option": "2"})
    assert (await next_frame(joiner))["total"] == 2


async def reset_during_lookup(port: int, looking_up: "asyncio.Queue[str]") -> None:
    """Ask for /ws/vote/demo, then reset the connection (RST) while the poll is looked up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws/vote/demo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    await asyncio.wait_for(looking_up.get(), TIMEOUT)
    sock.close()  # SO_LINGER 0: a reset, not a FIN


async def test_clients_that_reset_during_the_handshake_are_not_counted(
    app, ws_connect, http_server_client, monkeypatch
):
    """Clients that reset while prepare() looks the poll up leave the connections gauge exact."""
    store, look_up = app.settings["polls"], app.settings["polls"].get
    looking_up: asyncio.Queue[str] = asyncio.Queue()
    answer = asyncio.Event()

    async def held_lookup(poll_id: str):
        looking_up.put_nowait(poll_id)
        await answer.wait()
        return await look_up(poll_id)

    noticed: asyncio.Queue[VoteSocketHandler] = asyncio.Queue()
    connection_closed = VoteSocketHandler.on_connection_close

    def notice(self):
        noticed.put_nowait(self)
        connection_closed(self)

    monkeypatch.setattr(store, "get", held_lookup)
    monkeypatch.setattr(VoteSocketHandler, "on_connection_close", notice)
    for _ in range(3):
        await reset_during_lookup(port_of(http_server_client), looking_up)
        await asyncio.wait_for(noticed.get(), TIMEOUT)  # the server saw the reset
    answer.set()
    # The store answers in order, so by this client's snapshot the three handshakes have
    # gone on past open().
    await open_poll(ws_connect, "demo")

    metrics = (await http_server_client.fetch("/metrics")).body.decode().splitlines()
    samples = dict(line.rsplit(" ", 1) for line in metrics if not line.startswith("#"))
    assert float(samples['realtime_connections{endpoint="ws_vote"}']) == 1
