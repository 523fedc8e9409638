"""``server.py`` with one shutdown closer, for tests/test_shutdown.py.

``python tests/closer_server.py PORT [hang]``: the closer prints whether the server still
accepts connections and how many sockets are open when it runs, like a store flushing its
pending writes would see it; with ``hang`` it never finishes.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realtime.ops.lifecycle import Lifecycle  # noqa: E402
from realtime.pubsub.hub import Hub  # noqa: E402
from server import Config, serve  # noqa: E402


def main() -> None:
    port, hang = int(sys.argv[1]), sys.argv[2:] == ["hang"]
    hub, lifecycle = Hub(), Lifecycle()

    async def flush_pending_writes() -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            accepting = "yes"
        except OSError:
            accepting = "no"
        print(f"closer ran: accepting={accepting} open_sockets={len(hub.connections)}",
              flush=True)
        if hang:
            await asyncio.Event().wait()

    lifecycle.on_shutdown(flush_pending_writes)
    sys.exit(asyncio.run(serve(Config(port=port, hub=hub, lifecycle=lifecycle))))


if __name__ == "__main__":
    main()
