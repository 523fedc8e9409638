"""Helpers for talking to a test server over real sockets."""

import asyncio
import base64
import json
import os
import socket
from typing import Any, Optional, Union

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

TIMEOUT = 5.0


def ws_url(http_server_client: Any, path: str) -> str:
    """The ws:// URL of ``path`` on the test server."""
    return http_server_client.get_url(path).replace("http://", "ws://", 1)


async def connect(
    http_server_client: Any, path: str, headers: Optional[dict[str, str]] = None
) -> WebSocketClientConnection:
    """Open a real WebSocket to the test server."""
    request = HTTPRequest(ws_url(http_server_client, path), headers=headers)
    return await asyncio.wait_for(websocket_connect(request), TIMEOUT)


async def receive(conn: WebSocketClientConnection) -> Union[str, bytes, None]:
    """The next frame, or None once the connection is closed."""
    return await asyncio.wait_for(conn.read_message(), TIMEOUT)


async def receive_json(conn: WebSocketClientConnection) -> dict[str, Any]:
    """The next frame, which must be a JSON text frame."""
    frame = await receive(conn)
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    return json.loads(frame)


async def receive_type(conn: WebSocketClientConnection, kind: str) -> dict[str, Any]:
    """Read frames until one of type ``kind`` arrives and return it."""
    while True:
        message = await receive_json(conn)
        if message.get("type") == kind:
            return message


async def closed(conn: WebSocketClientConnection) -> Optional[int]:
    """Wait until the server closes the connection; return the close code."""
    while await receive(conn) is not None:
        pass
    return conn.close_code


async def send_json(conn: WebSocketClientConnection, message: Any) -> None:
    """Send one JSON text frame."""
    await conn.write_message(json.dumps(message))


async def raw_handshake(
    port: int, path: str, receive_buffer: int = 4096, extra_headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a TCP socket, do a WebSocket handshake by hand, and return the streams and the
    response head. The caller decides whether it ever reads again: this is a client that
    can stall. ``receive_buffer`` shrinks the kernel's buffer so a stall shows quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return reader, writer, head


def port_of(http_server_client: Any) -> int:
    """The test server's TCP port."""
    return int(http_server_client.get_http_port())
