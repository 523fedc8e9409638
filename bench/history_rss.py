"""What the chat history costs in memory: fill the in-process history to its byte budget and
read the process's resident size.

    python bench/history_rss.py                        # 60-character messages, 64 MiB
    python bench/history_rss.py --text-bytes 1000 --emoji

Builds the chat state as ``server.py`` does with default options (``rules.Rooms``, an
``EmbeddedChatState`` journaling to SQLite in a temporary data directory), then says
anonymous messages of ``--text-bytes`` characters (``--emoji``: the last one an emoji, which
makes CPython keep every character of the text in 4 bytes) in ``--rooms`` rooms in turn,
``--rounds`` times as many as the budget (``--chat-history-bytes``) can hold, so it is full
and has been dropping the oldest for a while. It prints the resident size (Linux ``VmRSS``)
before and after, and the growth over the budget.
"""

import argparse
import asyncio
import gc
import os
import sys
import tempfile
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from procs import rss  # noqa: E402
from realtime.chat import rules  # noqa: E402
from realtime.chat.state import EmbeddedChatState  # noqa: E402
from realtime.chat.store import DB_FILENAME, ChatStore  # noqa: E402
from realtime.pubsub.hub import Hub  # noqa: E402

MIB = 1 << 20


async def measure(args: argparse.Namespace, budget: int, text: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="history-rss-") as data_dir:
        rooms = rules.Rooms(history_bytes=budget)
        state = EmbeddedChatState(rooms, Hub(), ChatStore(os.path.join(data_dir, DB_FILENAME),
                                                          rooms))
        await state.start()
        gc.collect()
        before = rss(os.getpid())
        per_message = len(text) + 100 + rooms.budget.entry_overhead  # about, for the count
        total = int(args.rounds * budget / per_message)
        names = [f"room{n}" for n in range(args.rooms)]
        for said in range(total):
            # A text of its own per message, as from real clients (one shared string would
            # be kept once for every message).
            await state.say(names[said % len(names)], "speaker", f"{said:09d}{text[9:]}")
            if said % len(names) == 0:
                await asyncio.sleep(0)  # let the journal write its batches
        gc.collect()
        after = rss(os.getpid())
        held = sum(len(room) for room in (rooms.get(name)._messages for name in names))
        json_bytes = sum(rooms.get(name).history_bytes for name in names)
        await state.aclose()
    return dict(before=before, after=after, said=total, held=held, json=json_bytes)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-mib", type=float, default=rules.DEFAULT_HISTORY_BYTES / MIB,
                        help="--chat-history-bytes, in MiB (default: the server's)")
    parser.add_argument("--text-bytes", type=int, default=60,
                        help="characters of each message's text (default 60)")
    parser.add_argument("--emoji", action="store_true", help="end each text with an emoji")
    parser.add_argument("--rooms", type=int, default=200, help="rooms written to in turn")
    parser.add_argument("--rounds", type=float, default=2.0,
                        help="messages said, in budgets' worth (default 2)")
    args = parser.parse_args(argv)
    if args.budget_mib > 1024 or args.rooms > rules.DEFAULT_MAX_ROOMS or args.rounds > 10 \
            or not 10 <= args.text_bytes <= rules.MAX_TEXT_LENGTH:
        parser.error(f"at most 1024 MiB, {rules.DEFAULT_MAX_ROOMS} rooms, 10 rounds, "
                     f"{rules.MAX_TEXT_LENGTH} characters")
    budget = int(args.budget_mib * MIB)
    text = "x" * (args.text_bytes - 1) + ("\N{GRINNING FACE}" if args.emoji else "x")
    got = asyncio.run(measure(args, budget, text))
    emoji = " ending in an emoji" if args.emoji else ""
    print(f"Python {sys.version.split()[0]}, budget {budget / MIB:.0f} MiB, {args.rooms} "
          f"rooms, text of {args.text_bytes} characters{emoji}, {got['said']:,} messages "
          f"said, {got['held']:,} held "
          f"({got['json'] / MIB:.1f} MiB as JSON)")
    print(f"resident {got['before'] / MIB:.0f} MiB before, {got['after'] / MIB:.0f} MiB after: "
          f"growth {(got['after'] - got['before']) / budget:.2f}x the budget")


if __name__ == "__main__":
    main()
