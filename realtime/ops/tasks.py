"""Ending background tasks for certain: ``cancel_all``.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when the cancellation arrives just as that result does, so one
``task.cancel()`` may be swallowed and the task go on forever. redis-py wraps every write
with a socket timeout in ``wait_for``, so a task talking to Redis can swallow the cancel
its owner sends at shutdown, and ``cancel(); await gather(...)`` then waits forever.
"""

import asyncio
from collections.abc import Collection

CANCEL_AGAIN_AFTER = 0.1  # seconds a cancelled task gets to end before it is cancelled again


async def cancel_all(tasks: Collection["asyncio.Task[object]"],
                     again_after: float = CANCEL_AGAIN_AFTER) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again those still
    running after ``again_after`` seconds; their results and exceptions are collected
    (none is left "never retrieved")."""
    running = list(tasks)
    while running:
        for task in running:
            task.cancel()
        _, pending = await asyncio.wait(running, timeout=again_after)
        running = [task for task in running if task in pending]
    await asyncio.gather(*tasks, return_exceptions=True)
