"""cancel_all: background tasks end even when one swallows a cancellation."""

import asyncio

from realtime.ops.tasks import cancel_all


async def test_a_task_that_swallows_a_cancel_still_ends():
    """A task that swallows its first cancellation (as Python 3.11's ``wait_for`` may) is
    cancelled again and ends; a plain one ends at the first."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue
                raise

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(asyncio.sleep(10))]
    await asyncio.sleep(0)  # both are waiting
    await asyncio.wait_for(cancel_all(tasks, again_after=0.05), 2)
    assert swallowed == 2 and all(task.cancelled() for task in tasks)
