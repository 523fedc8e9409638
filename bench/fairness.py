"""Fairness benchmark: does one address flooding within its limits slow down everyone else?

    python bench/fairness.py                # about 30 s
    python bench/fairness.py --seconds 5 --chat 50
    python bench/fairness.py --chat 0 --fragments 0 --qr 50    # the QR code flood

Starts ``server.py`` in a subprocess exactly as a deployer would (default options, a free
127.0.0.1 port, a temporary ``--data-dir``), then:

1. idle: a victim connected from 127.0.0.2 does echo round trips on ``/ws/echo`` (about 16
   a second, under its own rate limit) for ``--seconds``; median and 99th percentile;
2. flood: an attacker process connected from 127.0.0.1 opens ``--chat`` anonymous sockets in
   one chat room, each sending just under the per-connection rate (``--rate``, default 19/s)
   and reading everything, plus ``--fragments`` sockets on ``/ws/echo`` sending empty
   continuation fragments of a message that never ends (``--fragment-rate`` each), plus
   ``--qr`` keep-alive HTTP connections asking for ``/vote/demo/qr.svg`` again and again,
   each sending its next request the moment the answer is in (never waiting as a 429's
   ``Retry-After`` asks); a closed attacker socket reconnects a second later. After
   ``--warmup`` seconds the victim measures again for ``--seconds``.

It prints the victim's p50/p90/p99 in both phases and their ratio, the server's CPU in each,
and what the attacker got: chat messages sent, accepted (heard back by their sender), refused
(``rate_limited`` frames), sockets closed by the server, fragments sent, deliveries read;
QR requests sent, answered 200, answered 429.

Everything is bounded: at most 100 attacker sockets (the default per-address cap), every
wait has a timeout, loopback only; the server and the attacker are killed at the end.
``--root`` runs the ``server.py`` of another checkout, to compare two versions.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from procs import cpu_seconds, free_port, wait_accepting

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VICTIM_IP = "127.0.0.2"
ATTACKER_IP = "127.0.0.1"
ROOM = "flood"
WAIT = 30.0  # seconds: the most any single step may take
VICTIM_INTERVAL = 0.06  # seconds between round trips: ~16/s, under the default 20/s
MAX_SOCKETS = 100
DRAIN = 1.0  # seconds the attacker keeps reading after it stops sending


# The attacker: raw sockets, so that its own parsing costs as little as possible.

def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (masked with a zero key, which RFC 6455 allows: it is the XOR)."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def open_raw(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket from ATTACKER_IP to ``path``, past the 101."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, local_addr=(ATTACKER_IP, 0), limit=1 << 20), WAIT)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


class Attacker:
    """Counts of what the attacker sent and got."""

    def __init__(self, port: int, rate: float, fragment_rate: float, until: float) -> None:
        self.port, self.rate, self.fragment_rate, self.until = port, rate, fragment_rate, until
        self.counts = dict(sent=0, accepted=0, refused=0, closed=0, refused_handshakes=0,
                           fragments=0, deliveries=0, qr_sent=0, qr_ok=0, qr_refused=0)

    async def chat(self, index: int) -> None:
        """One chat socket, reconnecting a second after the server closes it."""
        while time.monotonic() < self.until:
            try:
                reader, writer = await open_raw(self.port, f"/ws/chat/{ROOM}")
            except (OSError, ConnectionError, asyncio.TimeoutError):
                self.counts["refused_handshakes"] += 1
                await asyncio.sleep(1.0)
                continue
            marker = f'"text":"a{index}-'.encode()
            sender = asyncio.create_task(self._send_chat(writer, index))
            await self._read(reader, writer, marker)
            sender.cancel()
            writer.close()
            await asyncio.sleep(1.0)

    async def _send_chat(self, writer: asyncio.StreamWriter, index: int) -> None:
        # Staggered so the sockets do not all send in the same millisecond.
        step = 1 / self.rate
        due = time.monotonic() + step * (index % 20) / 20
        seq = 0
        while due < self.until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            text = f'{{"type":"message","text":"a{index}-{seq}"}}'.encode()
            writer.write(masked(0x1, text))
            self.counts["sent"] += 1
            seq += 1
            due += step

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    marker: bytes) -> None:
        buffer = bytearray()
        end = self.until + DRAIN  # what the server answered last is counted too
        while time.monotonic() < end:
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), max(
                    0.1, end - time.monotonic()))
            except (asyncio.TimeoutError, OSError):
                return
            if not data:
                return
            buffer += data
            pos = 0
            while len(buffer) - pos >= 2:
                length, head = buffer[pos + 1] & 0x7F, 2
                if length == 126:
                    length, head = int.from_bytes(buffer[pos + 2:pos + 4], "big"), 4
                elif length == 127:
                    length, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
                if len(buffer) - pos < head + length:
                    break
                opcode = buffer[pos] & 0x0F
                payload = bytes(buffer[pos + head:pos + head + length])
                pos += head + length
                if opcode == 0x8:
                    self.counts["closed"] += 1
                    writer.write(masked(0x8, payload[:2]))
                    return
                if b'"rate_limited"' in payload:
                    self.counts["refused"] += 1
                elif payload.startswith(b'{"type":"message"'):
                    self.counts["deliveries"] += 1
                    if marker in payload:
                        self.counts["accepted"] += 1
            del buffer[:pos]

    async def fragments(self) -> None:
        """One socket sending empty continuation fragments, reconnecting after a close."""
        while time.monotonic() < self.until:
            try:
                reader, writer = await open_raw(self.port, "/ws/echo")
            except (OSError, ConnectionError, asyncio.TimeoutError):
                self.counts["refused_handshakes"] += 1
                await asyncio.sleep(1.0)
                continue
            reading = asyncio.create_task(self._read(reader, writer, b"\0"))
            batch = max(1, int(self.fragment_rate / 100))  # written every 10 ms
            writer.write(masked(0x1, b"", fin=False))
            while not reading.done() and time.monotonic() < self.until:
                writer.write(masked(0x0, b"", fin=False) * batch)
                self.counts["fragments"] += batch
                await asyncio.sleep(0.01)
            reading.cancel()
            writer.close()
            await asyncio.sleep(1.0)

    async def qr(self) -> None:
        """One keep-alive HTTP connection asking for a poll's QR code as fast as answers
        come, reconnecting a second after the server closes it."""
        request = (f"GET /vote/demo/qr.svg HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   "\r\n").encode()
        while time.monotonic() < self.until:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(ATTACKER_IP, 0)), WAIT)
            except (OSError, asyncio.TimeoutError):
                self.counts["refused_handshakes"] += 1
                await asyncio.sleep(1.0)
                continue
            try:
                while time.monotonic() < self.until:
                    writer.write(request)
                    self.counts["qr_sent"] += 1
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await asyncio.wait_for(reader.readexactly(length), WAIT)
                    status = head[9:12]
                    if status == b"200":
                        self.counts["qr_ok"] += 1
                    elif status == b"429":
                        self.counts["qr_refused"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                self.counts["closed"] += 1
                await asyncio.sleep(1.0)
            finally:
                writer.close()


async def attack(port: int, chat: int, fragments: int, qr: int, rate: float,
                 fragment_rate: float, seconds: float) -> dict[str, int]:
    attacker = Attacker(port, rate, fragment_rate, time.monotonic() + seconds)
    tasks = [attacker.chat(n) for n in range(chat)]
    tasks += [attacker.fragments() for _ in range(fragments)]
    tasks += [attacker.qr() for _ in range(qr)]
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + WAIT)
    return attacker.counts


# The victim and the orchestration.

async def round_trips(url: str, seconds: float) -> list[float]:
    """Echo round trips from VICTIM_IP for ``seconds``; their times in ms."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await asyncio.wait_for(
        websocket_connect(HTTPRequest(url, network_interface=VICTIM_IP)), WAIT)
    times = []
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            text = f"victim {n}"
            sent = time.perf_counter()
            await conn.write_message(text)
            answer = await asyncio.wait_for(conn.read_message(), WAIT)
            if answer != text:
                raise RuntimeError(f"the victim got {answer!r} for {text!r}")
            times.append(1000 * (time.perf_counter() - sent))
            n += 1
            await asyncio.sleep(VICTIM_INTERVAL)
    finally:
        conn.close()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def phase(url: str, server_pid: int, seconds: float,
                attacker_pid: Optional[int] = None) -> dict[str, float]:
    """The victim's round trips for ``seconds``, and the CPU share of the server (and of the
    attacker process, which shares the machine) meanwhile."""
    pids = [server_pid] if attacker_pid is None else [server_pid, attacker_pid]
    cpu, wall = [cpu_seconds(pid) for pid in pids], time.monotonic()
    times = await round_trips(url, seconds)
    wall = time.monotonic() - wall
    used = [100 * (cpu_seconds(pid) - before) / wall for pid, before in zip(pids, cpu)]
    return {"p50": statistics.median(times), "p90": percentile(times, 0.90),
            "p99": percentile(times, 0.99),
            "n": len(times), "cpu": used[0], "attacker_cpu": used[-1] if attacker_pid else 0}


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any],
                                                     dict[str, int]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fairness-") as data_dir:
        server = subprocess.Popen(
            [sys.executable, "server.py", f"--port={port}", "--address=127.0.0.1",
             f"--data-dir={data_dir}"],
            cwd=args.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        attacker: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        try:
            await wait_accepting(port, lambda: server.poll() is not None, WAIT)
            url = f"ws://127.0.0.1:{port}/ws/echo"
            idle = await phase(url, server.pid, args.seconds)
            attacker = subprocess.Popen(
                [sys.executable, __file__, "--attack", str(port), "--chat", str(args.chat),
                 "--fragments", str(args.fragments), "--qr", str(args.qr),
                 "--rate", str(args.rate),
                 "--fragment-rate", str(args.fragment_rate),
                 "--seconds", str(args.warmup + args.seconds + 1)],
                stdout=subprocess.PIPE, text=True)
            assert attacker.stdout is not None
            ready = await asyncio.wait_for(
                asyncio.to_thread(attacker.stdout.readline), WAIT)
            if ready.strip() != "ready":
                raise RuntimeError("the attacker did not start")
            await asyncio.sleep(args.warmup)
            flood = await phase(url, server.pid, args.seconds, attacker.pid)
            out, _ = await asyncio.wait_for(asyncio.to_thread(attacker.communicate), WAIT)
            return idle, flood, json.loads(out)
        finally:
            for process in (attacker, server):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)


def table(idle: dict[str, float], flood: dict[str, float], counts: dict[str, int]) -> str:
    """The results as Markdown tables."""
    lines = [
        "| victim (127.0.0.2) echo | p50 ms | p90 ms | p99 ms | round trips | server CPU |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| idle | {idle['p50']:.2f} | {idle['p90']:.2f} | {idle['p99']:.2f} | "
        f"{idle['n']:.0f} | {idle['cpu']:.0f}% |",
        f"| under flood | {flood['p50']:.2f} | {flood['p90']:.2f} | {flood['p99']:.2f} | "
        f"{flood['n']:.0f} | {flood['cpu']:.0f}% |",
        f"| ratio | {flood['p50'] / idle['p50']:.1f}x | {flood['p90'] / idle['p90']:.1f}x | "
        f"{flood['p99'] / idle['p99']:.1f}x | | |",
        "",
        "| attacker (127.0.0.1) | chat sent | accepted | refused | closed by server | "
        "fragments sent | deliveries read | its CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| whole flood | {counts['sent']:,} | {counts['accepted']:,} | {counts['refused']:,} | "
        f"{counts['closed']:,} | {counts['fragments']:,} | {counts['deliveries']:,} | "
        f"{flood['attacker_cpu']:.0f}% |",
        "",
        "| attacker (127.0.0.1) | QR requests sent | answered 200 | answered 429 |",
        "| --- | --- | --- | --- |",
        f"| whole flood | {counts['qr_sent']:,} | {counts['qr_ok']:,} | "
        f"{counts['qr_refused']:,} |",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each measured phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of flood before the victim measures (default 2)")
    parser.add_argument("--chat", type=int, default=92, help="attacker chat sockets")
    parser.add_argument("--fragments", type=int, default=8, help="attacker fragment sockets")
    parser.add_argument("--qr", type=int, default=0,
                        help="attacker keep-alive connections flooding qr.svg (default 0)")
    parser.add_argument("--rate", type=float, default=19.0,
                        help="messages per second per chat socket (default 19, under 20)")
    parser.add_argument("--fragment-rate", type=float, default=2000.0,
                        help="fragments per second per fragment socket (default 2000)")
    parser.add_argument("--root", default=ROOT,
                        help="the checkout whose server.py runs (default: this one)")
    parser.add_argument("--attack", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.chat + args.fragments + args.qr > MAX_SOCKETS or args.seconds > 120 \
            or args.rate > 1000 or args.fragment_rate > 100_000:
        parser.error(f"at most {MAX_SOCKETS} attacker sockets, 120 s, 1000 msg/s, "
                     "100,000 fragments/s")
    if args.attack:
        counts = asyncio.run(attack(args.attack, args.chat, args.fragments, args.qr, args.rate,
                                    args.fragment_rate, args.seconds))
        print(json.dumps(counts), flush=True)
        return
    load = os.getloadavg()[0]
    idle, flood, counts = asyncio.run(measure(args))
    # Other processes on the machine take CPU from the server: a busy machine shows as
    # latency that no server change can fix, so the figure says how busy it was.
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, 1-minute load "
          f"{load:.1f} before and {os.getloadavg()[0]:.1f} after, server {args.root}, "
          f"default options; attacker: {args.chat} chat sockets at {args.rate:g}/s in one "
          f"room, {args.fragments} fragment sockets at {args.fragment_rate:g}/s, {args.qr} "
          f"connections flooding qr.svg")
    print(table(idle, flood, counts))


if __name__ == "__main__":
    main()
