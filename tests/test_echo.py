"""The echo endpoint over a real WebSocket."""

import socket

from tests.support import receive


async def test_text_comes_back_as_text(ws_connect):
    """A text frame is echoed back as the same text."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("héllo, 世界 <b>not html</b>")
    assert await receive(conn) == "héllo, 世界 <b>not html</b>"


async def test_binary_comes_back_as_binary(ws_connect):
    """A binary frame is echoed back as the same bytes, in a binary frame."""
    conn = await ws_connect("/ws/echo")
    payload = bytes(range(256))
    await conn.write_message(payload, binary=True)
    assert await receive(conn) == payload


async def test_text_that_looks_like_json_is_not_interpreted(ws_connect):
    """Echo is not a JSON endpoint: JSON text comes back unchanged, not as an error."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message('{"type": "nonsense"}')
    assert await receive(conn) == '{"type": "nonsense"}'


async def test_frames_come_back_in_order(ws_connect):
    """Many frames sent in a burst come back in the order they were sent."""
    conn = await ws_connect("/ws/echo")
    for n in range(100):
        conn.write_message(str(n))
    assert [await receive(conn) for _ in range(100)] == [str(n) for n in range(100)]


async def test_empty_frame_comes_back(ws_connect):
    """An empty text frame is echoed as an empty text frame."""
    conn = await ws_connect("/ws/echo")
    await conn.write_message("")
    assert await receive(conn) == ""


async def test_a_plain_hook_runs_within_on_message_without_a_task(ws_connect, hub):
    """on_message returns None for a plain received() (Tornado then makes no Task and waits
    no turn of the loop per message); the hook has run by then."""
    client = await ws_connect("/ws/echo")
    handler = hub.connections[0]
    written: list[object] = []
    handler.send_frame = written.append

    assert handler.on_message("hello") is None
    assert written == ["hello"]
    client.close()


async def test_answers_leave_at_once_without_nagle(ws_connect, hub):
    """An echo socket has TCP_NODELAY set, as asyncio servers do: each answer leaves at
    once instead of waiting to be coalesced with the next."""
    client = await ws_connect("/ws/echo")
    await client.write_message("now")
    assert await receive(client) == "now"
    [handler] = hub.connections
    assert handler.ws_connection.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
