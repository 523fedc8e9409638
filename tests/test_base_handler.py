"""The JSON socket base class: dispatch, error frames, the 1011 boundary, cleanup on close."""

import asyncio
import json
import logging

import pytest
import tornado.web

from handlers.websocket import JsonSocketHandler
from realtime.pubsub.delivery import CloseReason
from realtime.pubsub.hub import Hub
from realtime.wire.closecodes import CloseCode
from realtime.wire.messages import ClientError, Message
from tests.support import closed, receive_json, send_json


class ProbeSocketHandler(JsonSocketHandler):
    """A small endpoint built the way every real one is."""

    def initialize(self, hub: Hub, closed_event: asyncio.Event) -> None:
        super().initialize(hub)
        self.closed_event = closed_event

    def connected(self) -> None:
        self.subscribe("probe.all")

    def handle_ping(self, message: Message) -> None:
        self.send({"type": "pong", "echo": message.get("echo")})

    async def handle_slow_ping(self, message: Message) -> None:
        await asyncio.sleep(0)
        self.send({"type": "pong", "echo": message.get("echo")})

    def handle_refuse(self, message: Message) -> None:
        raise ClientError("not_allowed", "You may not do that.")

    def handle_boom(self, message: Message) -> None:
        raise RuntimeError("a bug in the handler")

    def disconnected(self) -> None:
        self.closed_event.set()


@pytest.fixture
def closed_event() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def app(hub: Hub, closed_event: asyncio.Event) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/ws/probe", ProbeSocketHandler, dict(hub=hub, closed_event=closed_event))]
    )


async def assert_still_usable(conn) -> None:
    await send_json(conn, {"type": "ping", "echo": 1})
    assert await receive_json(conn) == {"type": "pong", "echo": 1}


async def test_message_is_dispatched_to_its_handle_method(ws_connect):
    """A {"type": "ping"} frame reaches handle_ping, which answers."""
    conn = await ws_connect("/ws/probe")
    await assert_still_usable(conn)


async def test_async_handle_method_is_awaited(ws_connect):
    """A coroutine handle_ method runs to completion and its answer arrives."""
    conn = await ws_connect("/ws/probe")
    await send_json(conn, {"type": "slow_ping", "echo": "x"})
    assert await receive_json(conn) == {"type": "pong", "echo": "x"}


async def test_non_json_text_gets_bad_json_and_connection_stays(ws_connect):
    """Text that is not JSON is answered with bad_json and the socket keeps working."""
    conn = await ws_connect("/ws/probe")
    await conn.write_message("this is not json{")
    error = await receive_json(conn)
    assert error["type"] == "error" and error["code"] == "bad_json"
    assert isinstance(error["message"], str) and error["message"]
    await assert_still_usable(conn)


@pytest.mark.parametrize("text", ["[]", "42", "null", '"x"', "true", "[{\"type\": \"ping\"}]"])
async def test_json_that_is_not_an_object_gets_bad_message(ws_connect, text):
    """JSON arrays, numbers, null and strings are answered with bad_message."""
    conn = await ws_connect("/ws/probe")
    await conn.write_message(text)
    error = await receive_json(conn)
    assert (error["type"], error["code"]) == ("error", "bad_message")
    await assert_still_usable(conn)


@pytest.mark.parametrize("message", [{}, {"text": "hi"}, {"type": 7}, {"type": ""}, {"type": None}])
async def test_missing_or_non_string_type_gets_bad_message(ws_connect, message):
    """An object without a non-empty "type" string is answered with bad_message."""
    conn = await ws_connect("/ws/probe")
    await send_json(conn, message)
    error = await receive_json(conn)
    assert (error["type"], error["code"]) == ("error", "bad_message")
    await assert_still_usable(conn)


@pytest.mark.parametrize("kind", ["nope", "close", "open", "on_message", "__class__", "ping "])
async def test_unknown_type_gets_unknown_type(ws_connect, kind):
    """A type with no handle_ method, Tornado's own method names included, is unknown_type."""
    conn = await ws_connect("/ws/probe")
    await send_json(conn, {"type": kind})
    error = await receive_json(conn)
    assert (error["type"], error["code"]) == ("error", "unknown_type")
    await assert_still_usable(conn)


async def test_binary_frame_gets_bad_message(ws_connect):
    """A binary frame on a JSON endpoint is answered with bad_message."""
    conn = await ws_connect("/ws/probe")
    await conn.write_message(b"\x00\xff", binary=True)
    error = await receive_json(conn)
    assert (error["type"], error["code"]) == ("error", "bad_message")
    await assert_still_usable(conn)


async def test_client_error_becomes_error_frame(ws_connect):
    """A ClientError raised by a handler reaches the client as its code and message."""
    conn = await ws_connect("/ws/probe")
    await send_json(conn, {"type": "refuse"})
    assert await receive_json(conn) == {
        "type": "error", "code": "not_allowed", "message": "You may not do that.",
    }
    await assert_still_usable(conn)


async def test_unexpected_exception_closes_with_1011_and_logs_traceback(ws_connect, caplog):
    """A bug in a handler is logged with its traceback and the client sees close code 1011."""
    conn = await ws_connect("/ws/probe")
    with caplog.at_level(logging.ERROR, logger="realtime.handlers"):
        await send_json(conn, {"type": "boom"})
        assert await closed(conn) == CloseCode.INTERNAL_ERROR
    assert any(r.exc_info and "a bug in the handler" in str(r.exc_info[1]) for r in caplog.records)


async def test_exception_reaches_no_other_client(ws_connect):
    """When one connection hits a bug, another connection keeps working."""
    victim = await ws_connect("/ws/probe")
    bystander = await ws_connect("/ws/probe")
    await send_json(victim, {"type": "boom"})
    assert await closed(victim) == CloseCode.INTERNAL_ERROR
    await assert_still_usable(bystander)


@pytest.mark.parametrize("reason, code, text", [
    (CloseReason.SLOW, 1008, "slow consumer: messages were not read"),
    (CloseReason.SHUTDOWN, 1001, "server shutting down"),
    (CloseReason.ERROR, 1011, "internal server error"),
    (CloseReason.GAP, 1012, "messages missed: reconnect with since"),
], ids=lambda value: value.value if isinstance(value, CloseReason) else None)
async def test_the_hubs_reasons_close_a_socket_with_their_code_and_text(
    ws_connect, hub, reason, code, text
):
    """Each reason the hub closes a connection for reaches a WebSocket client as its close
    code and text, the same on the wire as before the hub spoke reasons."""
    conn = await ws_connect("/ws/probe")
    await assert_still_usable(conn)
    [handler] = hub.connections

    handler.close_for(reason)

    assert await closed(conn) == code
    assert conn.close_reason == text


async def test_subscriptions_are_undone_on_close(ws_connect, hub, closed_event):
    """Once a client closes, the hub holds no subscription or byte count for it."""
    conn = await ws_connect("/ws/probe")
    await assert_still_usable(conn)
    assert len(hub.subscribers("probe.all")) == 1

    conn.close()
    await asyncio.wait_for(closed_event.wait(), 5)

    assert hub.subscribers("probe.all") == set()
    assert hub.connections == []


async def test_error_frame_is_compact_json(ws_connect):
    """Error frames are JSON objects with exactly type, code and message."""
    conn = await ws_connect("/ws/probe")
    await conn.write_message("{")
    frame = await conn.read_message()
    assert set(json.loads(frame)) == {"type", "code", "message"}
