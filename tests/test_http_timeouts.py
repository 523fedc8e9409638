"""HTTP connection timeouts of the real process: a connection that sends no complete
request head, or stops sending its body, is closed; a WebSocket is not an idle connection."""

import asyncio
from typing import Any

from tests.process import start_server_process
from tests.support import receive

# Seconds the client waits for the server's close: far above the 1 s timeouts given to the
# server, so only a server that never closes fails.
CLIENT_WAIT = 30.0


async def server_closes(reader: asyncio.StreamReader) -> bool:
    """Read until the server ends the connection; True once it has."""
    while await asyncio.wait_for(reader.read(65536), CLIENT_WAIT):
        pass
    return True


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the server."""
    return await asyncio.open_connection("127.0.0.1", port)


async def test_connection_that_sends_nothing_is_closed(spawn, python, tmp_path):
    """A TCP connection that never sends a byte is closed after --idle-connection-timeout."""
    _, port = await start_server_process(spawn, python, tmp_path,
                                         "--idle-connection-timeout", "1")
    reader, writer = await open_raw(port)
    assert await server_closes(reader)
    writer.close()


async def test_half_a_request_line_is_closed(spawn, python, tmp_path):
    """A client that sends half a request line and stops is closed, not held for an hour."""
    _, port = await start_server_process(spawn, python, tmp_path,
                                         "--idle-connection-timeout", "1")
    reader, writer = await open_raw(port)
    writer.write(b"GET /healthz HT")
    assert await server_closes(reader)
    writer.close()


async def test_idle_keep_alive_connection_is_closed(spawn, python, tmp_path):
    """After a served request, a keep-alive connection that sends nothing more is closed."""
    _, port = await start_server_process(spawn, python, tmp_path,
                                         "--idle-connection-timeout", "1")
    reader, writer = await open_raw(port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLIENT_WAIT)
    assert head.startswith(b"HTTP/1.1 200")
    assert await server_closes(reader)
    writer.close()


async def test_body_that_stops_coming_is_closed(spawn, python, tmp_path):
    """A request whose body stops halfway is closed after --body-timeout."""
    _, port = await start_server_process(spawn, python, tmp_path, "--body-timeout", "1")
    reader, writer = await open_raw(port)
    writer.write(f"POST /api/polls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"q".encode())
    assert await server_closes(reader)
    writer.close()


async def test_websocket_outlives_the_idle_connection_timeout(spawn, python, tmp_path, ws_open):
    """An open WebSocket is not an idle HTTP connection: it still echoes after an idle TCP
    connection opened at the same time has been closed by the timeout."""
    _, port = await start_server_process(spawn, python, tmp_path,
                                         "--idle-connection-timeout", "1")
    conn: Any = await ws_open(f"ws://127.0.0.1:{port}/ws/echo")
    reader, writer = await open_raw(port)
    assert await server_closes(reader)  # the timeout has passed for both
    await conn.write_message("still here")
    assert await receive(conn) == "still here"
    writer.close()
