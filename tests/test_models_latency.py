"""Added latency for the /models rooms (``?latency=`` on /poll, /sse and /ws chat): only the
offered values, only in those rooms, a clear error otherwise, and the deliveries really wait."""

import asyncio
import json
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from realtime.chat.latency import is_models_room, parse_latency
from realtime.pubsub import delivery
from realtime.pubsub.delayed import DelayedWrites
from realtime.pubsub.envelope import Envelope
from realtime.wire.closecodes import CloseCode
from realtime.wire.messages import ClientError
from tests.support import TIMEOUT, closed, connect, receive_json, receive_type


@pytest.mark.parametrize("raw", ["50", "", "0.3", "300ms", " 100", "-100", "1e2", "3000"])
def test_a_latency_not_offered_is_bad_latency(raw):
    """Any ``latency`` but 0, 100 or 300 is refused with ``bad_latency``."""
    with pytest.raises(ClientError) as refused:
        parse_latency(raw, "models-abc")
    assert refused.value.code == "bad_latency"


def test_latency_is_only_for_the_models_rooms():
    """A non-zero latency in another room is ``latency_not_allowed``; 0 is fine anywhere."""
    with pytest.raises(ClientError) as refused:
        parse_latency("300", "lobby")
    assert refused.value.code == "latency_not_allowed"
    assert parse_latency("0", "lobby") == 0
    assert parse_latency(None, "lobby") == 0
    assert parse_latency("300", "models-x1") == 0.3
    assert is_models_room("models") and not is_models_room("modelsx")


async def test_delayed_writes_keep_their_order_and_wait():
    """Held envelopes reach the writer in the order they came, none before its delay."""
    written: list[tuple[bytes, float]] = []
    done = asyncio.get_running_loop().create_future()

    def write(envelope: Envelope, max_pending: int) -> int:
        written.append((envelope.data, time.monotonic()))
        if len(written) == 5:
            done.set_result(None)
        return delivery.WRITTEN

    delayed = DelayedWrites(write, 0.05, stalled=lambda: None)
    started = time.monotonic()
    for n in range(5):
        assert delayed.write(Envelope(b"%d" % n), 1000) == delivery.WRITTEN
    await asyncio.wait_for(done, TIMEOUT)
    assert [data for data, _ in written] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(at - started >= 0.05 for _, at in written)


async def test_delayed_writes_are_bounded_in_bytes():
    """What waits is bounded by the writer's own backlog bound: past it, STALLED."""
    delayed = DelayedWrites(lambda envelope, bound: delivery.WRITTEN, 10, stalled=lambda: None)
    outcomes = [delayed.write(Envelope(b"x" * 60), 100) for _ in range(2)]
    delayed.close()
    assert outcomes == [delivery.WRITTEN, delivery.STALLED]


async def get(http_server_client, path):
    """A GET to the test server, its error answers included."""
    return await AsyncHTTPClient().fetch(
        http_server_client.get_url(path), raise_error=False, request_timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/poll/chat/models-a?since=0&wait=0&latency=50",
                                  "/sse/chat/models-a?latency=50"])
async def test_http_transports_answer_a_bad_latency_with_a_json_error(http_server_client, path):
    """A bad ``latency`` on a poll or an event stream is a 400 with ``bad_latency``."""
    response = await get(http_server_client, path)
    assert response.code == 400
    error = json.loads(response.body)["error"]
    assert error["code"] == "bad_latency" and "100" in error["message"]


async def test_a_latency_in_a_real_chat_room_is_refused(http_server_client):
    """``latency=300`` on a room that is not a /models room is a 400, never a wait."""
    response = await get(http_server_client, "/poll/chat/lobby?since=0&wait=0&latency=300")
    assert response.code == 400
    assert json.loads(response.body)["error"]["code"] == "latency_not_allowed"


async def test_a_socket_with_a_bad_latency_gets_an_error_frame_and_a_close(http_server_client):
    """A WebSocket asking for a bad latency hears ``bad_latency`` and is closed with 1008."""
    conn = await connect(http_server_client, "/ws/chat/models-a?latency=7")
    error = await receive_json(conn)
    assert error["type"] == "error" and error["code"] == "bad_latency"
    assert await closed(conn) == CloseCode.POLICY_VIOLATION
    conn.close()


async def test_a_poll_with_latency_is_answered_no_sooner(http_server_client):
    """A short poll with ``latency=100`` is answered after at least 100 ms."""
    started = time.monotonic()
    response = await get(http_server_client, "/poll/chat/models-b?since=0&wait=0&latency=100")
    assert response.code == 200
    assert time.monotonic() - started >= 0.1


async def test_a_socket_with_latency_hears_a_message_no_sooner(http_server_client):
    """On a socket with ``latency=300`` a message sent arrives at least 300 ms later."""
    conn = await connect(http_server_client, "/ws/chat/models-c?latency=300")
    await receive_type(conn, "welcome")
    started = time.monotonic()
    response = await AsyncHTTPClient().fetch(
        http_server_client.get_url("/poll/chat/models-c"), method="POST",
        headers={"Content-Type": "application/json"}, body=json.dumps({"text": "hello"}),
        request_timeout=TIMEOUT)
    assert response.code == 200
    message = await receive_type(conn, "message")
    assert message["text"] == "hello"
    assert time.monotonic() - started >= 0.3
    conn.close()
    await closed(conn)
