"""A Server-Sent Events client on a raw socket, for tests: the response head as it arrives,
then the events one at a time (a chunked body decoded), and a client that can stop reading.

    stream = await EventStream.open(port, "/sse/chat/lobby?nick=alice")
    assert stream.status == 200
    welcome = await stream.frame()              # the next event's data, as JSON
    message = await stream.frame_of("message")  # skip events until one of that type
    stream.close()
"""

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any, Optional

from tests.support import TIMEOUT, RawReader


@dataclass
class Event:
    """One event: its ``id:`` (None if it had none) and its ``data:`` lines joined."""

    id: Optional[str]
    data: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


class EventStream:
    """One ``text/event-stream`` response; see the module docstring."""

    def __init__(self, reader: RawReader, transport: asyncio.Transport) -> None:
        self.reader = reader
        self.transport = transport
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names
        self.comments = 0  # comment lines (heartbeats) seen so far
        self._chunked = False
        self._body = bytearray()  # decoded body not yet parsed into events
        self._ended = False

    @classmethod
    async def open(
        cls, port: int, path: str, headers: Optional[dict[str, str]] = None,
        host: str = "127.0.0.1", source_ip: Optional[str] = None,
        receive_buffer: Optional[int] = None, reader_limit: int = 256 * 1024,
        version: str = "HTTP/1.1",
    ) -> "EventStream":
        """GET ``path`` and read the response head (``status``, ``headers``).

        ``receive_buffer`` shrinks the kernel's receive buffer, so a client that stops
        reading stalls the server quickly; ``source_ip`` binds the client's address;
        ``version`` "HTTP/1.0" asks for a body that is not chunked."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if source_ip is not None:
            sock.bind((source_ip, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), TIMEOUT)
        transport, reader = await loop.create_connection(
            lambda: RawReader(reader_limit), sock=sock)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        transport.write(f"GET {path} {version}\r\nHost: {host}:{port}\r\n"
                        f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        stream = cls(reader, transport)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        stream.status = int(status_line.split()[1])
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                stream.headers[name.strip().lower()] = value.strip()
        stream._chunked = stream.headers.get("transfer-encoding") == "chunked"
        return stream

    async def event(self, timeout: float = TIMEOUT) -> Event:
        """The next event (comment lines are counted and skipped).

        Raises:
            EOFError: the response ended first.
        """
        return await asyncio.wait_for(self._next_event(), timeout)

    async def frame(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event's data as JSON."""
        return (await self.event(timeout)).json()

    async def frame_except(self, *kinds: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event's JSON whose ``type`` is none of ``kinds`` (frames a test is not
        about, such as a poll's ``participants`` counts)."""
        async def find() -> dict[str, Any]:
            while True:
                frame = (await self._next_event()).json()
                if frame.get("type") not in kinds:
                    return frame
        return await asyncio.wait_for(find(), timeout)

    async def frame_of(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Skip events until one whose JSON ``type`` is ``kind``."""
        async def find() -> dict[str, Any]:
            while True:
                frame = (await self._next_event()).json()
                if frame.get("type") == kind:
                    return frame
        return await asyncio.wait_for(find(), timeout)

    async def ended(self, timeout: float = TIMEOUT) -> bool:
        """Read and discard until the server ends the response or the connection."""
        async def drain() -> bool:
            while True:
                try:
                    await self._next_event()
                except EOFError:
                    return True
        return await asyncio.wait_for(drain(), timeout)

    def close(self) -> None:
        """Go away: close the TCP connection."""
        self.transport.close()

    async def _next_event(self) -> Event:
        while True:
            end = self._body.find(b"\n\n")
            if end >= 0:
                block = bytes(self._body[:end]).decode("utf-8")
                del self._body[:end + 2]
                event = self._parse(block)
                if event is not None:
                    return event
                continue
            if self._ended:
                raise EOFError("the event stream ended")
            await self._read_more()

    def _parse(self, block: str) -> Optional[Event]:
        event_id, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("id:"):
                event_id = line[3:].removeprefix(" ")
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        return Event(event_id, "\n".join(data)) if data else None

    async def _read_more(self) -> None:
        reader = self.reader
        try:
            if not self._chunked:
                data = await reader.read(65536)
                if not data:
                    self._ended = True
                self._body.extend(data)
                return
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                self._ended = True
                return
            self._body.extend(await reader.readexactly(size))
            await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            self._ended = True
