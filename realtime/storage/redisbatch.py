"""Auto-batching of Redis script calls: the calls made in one loop turn share one pipeline.

A process that runs one Lua script per chat message (or vote, or nickname lease) spends
most of its time sending commands one round trip at a time. ``ScriptBatcher.call`` instead
queues the call and, at the end of the loop turn (``loop.call_soon``), sends everything
queued as one pipeline of ``EVALSHA`` commands: one write, one read, one round trip for a
whole burst. While a pipeline is on its way, calls queue for the next one, which takes
everything queued (the calls of several turns) when the one before is back. Each call is
still its own script, which Redis runs atomically (a chat message's append and publish
stay one step); only the trip is shared.

Bounds. A pipeline holds at most ``max_count`` calls and ``max_bytes`` bytes of arguments;
more goes into the next one (a single call larger than ``max_bytes`` goes alone).
``max_count=1`` sends every call on its own: pipelining off, for comparison.

Order. Pipelines go out one at a time, in order, on one connection, and Redis runs the
commands of a pipeline in the order they were sent: a call made after another runs after
it. That is what keeps a chat room's ids in the order its messages were sent (a message
sent later never gets a lower id, nor is published before an earlier one). Results are
handed back in the same order, so callers resume in commit order. While a pipeline is on
its way, new calls gather for the next one: the busier the process, the bigger the batch.
(Taking only one turn's calls per pipeline would not do: callers answered together call
again together, so a process would keep as many small pipelines going round as there
were turns at the start of a burst.)

Failures. Every caller gets its own result or its own exception. A script error (a refused
command) fails that call only. A failure of the pipeline itself (the connection lost, a
timeout) fails every call of it, and every call queued behind it, with that exception: none
of them is known to be stored, and a later call must not be stored before an earlier one
whose fate is unknown. A ``NOSCRIPT`` answer (Redis restarted, ``SCRIPT FLUSH``) loads the
script and sends the calls that got it again, in their order, in the next pipeline. (Every
``EVALSHA`` of a pipeline that reaches a flushed Redis fails alike, since nothing in it
loads a script; only another client loading the same script in the middle of one pipeline
could let a later call of it run before an earlier one is retried.)

Fresh arguments. An argument may be a function of no arguments: it is called when the
pipeline is built (``pipelines`` already counts it), after the callers of the pipeline
before it have handled their replies (the sender lets them run first). A chat message's
lowest id is one: a message whose predecessor could not be stored, and was shown under an
id of this process's own, is stored above that id; its deadline is another (see
``realtime.chat.redisstate``).

The client is given (any ``redis.asyncio`` client with ``pipeline()``), so the same batcher
can run on another connection pool or, later, on a cluster client whose pipelines group
commands per node (calls on one room's keys land on one node, in order).
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

DEFAULT_MAX_COUNT = 500  # calls per pipeline
DEFAULT_MAX_BYTES = 1024 * 1024  # bytes of keys and arguments per pipeline
NUMBER_SIZE = 8  # what a number argument is counted as


def size_of(values: Sequence[Any]) -> int:
    """Bytes ``values`` take on the wire, about (strings and bytes by length)."""
    size = 0
    for value in values:  # a plain loop: this runs for every call
        size += len(value) if type(value) in (bytes, str) else NUMBER_SIZE
    return size


def fresh(values: Sequence[Any]) -> list[Any]:
    """``values`` with each function in them replaced by what it returns now."""
    return [value() if callable(value) else value for value in values]


@dataclass
class _Call:
    """One script call waiting for its pipeline."""

    sha: str
    body: str  # the script's source, to load it again after a NOSCRIPT
    keys: Sequence[Any]
    args: Sequence[Any]
    size: int
    future: "asyncio.Future[Any]" = field(repr=False)


class ScriptBatcher:
    """Sends the script calls of a loop turn in one pipeline; see the module docstring.

    Args:
        client: the Redis client whose connections run the pipelines (one at a time).
        max_count: calls per pipeline, at most; 1 is pipelining off.
        max_bytes: bytes of keys and arguments per pipeline, at most.
    """

    def __init__(self, client: Any, *, max_count: int = DEFAULT_MAX_COUNT,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("a pipeline holds one call at least")
        self.client = client
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._queue: deque[_Call] = deque()  # calls not sent yet, in the order made
        self._flush_scheduled = False
        self._sender: Optional[asyncio.Task[None]] = None  # sends the pipelines, in order
        self._closed = False
        # Round trips: pipelines (NOSCRIPT retries too) and single calls. It counts up
        # before a pipeline's arguments are read, so a function among them can tell the
        # pipelines apart.
        self.pipelines = 0
        self.calls = 0  # calls sent

    @property
    def batching(self) -> bool:
        """Whether calls share pipelines (``max_count`` above 1)."""
        return self.max_count > 1

    async def call(self, script: Any, keys: Sequence[Any] = (),
                   args: Sequence[Any] = ()) -> Any:
        """Run ``script`` (a registered redis-py script: its ``sha`` and ``script``) with
        ``keys`` and ``args`` in the next pipeline; its reply, once Redis has run it. A
        function among ``args`` is called when the pipeline is built.

        Raises:
            redis.exceptions.ResponseError: Redis refused this call (the script failed).
            Exception: whatever failed the whole pipeline (a lost connection, a timeout).
        """
        if self._closed:
            raise RedisConnectionError("the batcher is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        body = script.script.decode() if isinstance(script.script, bytes) else script.script
        self._queue.append(_Call(script.sha, body, keys, args,
                                 size_of(keys) + size_of(args), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # after every call this turn makes
        return await future

    async def aclose(self) -> None:
        """Stop sending; calls not answered yet fail with a ``ConnectionError``."""
        self._closed = True
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        waiting = list(self._queue)
        self._queue.clear()
        self._fail(waiting, RedisConnectionError("the batcher is closed"))

    def _flush(self) -> None:
        """End of the turn: have what is queued sent, unless a pipeline is on its way (the
        sender takes what is queued when it is back)."""
        self._flush_scheduled = False
        if self._queue and self._sender is None and not self._closed:
            self._sender = asyncio.create_task(self._send_all(), name="redis-batcher")

    def _take(self) -> list[_Call]:
        """The next pipeline's calls: the oldest queued, within the bounds."""
        batch: list[_Call] = []
        size = 0
        while self._queue and len(batch) < self.max_count:
            call = self._queue[0]
            if batch and size + call.size > self.max_bytes:
                break
            batch.append(self._queue.popleft())
            size += call.size
        return batch

    async def _send_all(self) -> None:
        """Send pipelines one after the other until nothing is queued."""
        try:
            while self._queue:
                # The callers of the pipeline before have their replies: let them act on
                # them (see "Fresh arguments") before the next one is built.
                await asyncio.sleep(0)
                batch = self._take()
                if not batch:
                    break
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    self._fail(batch, RedisConnectionError("the batcher is closed"))
                    raise
                except Exception as error:
                    # Nothing queued behind a failed pipeline may overtake it.
                    behind = list(self._queue)
                    self._queue.clear()
                    self._fail(batch + behind, error)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Call]) -> None:
        """One batch: a pipeline, then again the calls Redis did not know the script of."""
        todo = [call for call in batch if not call.future.done()]  # callers that gave up
        if len(todo) == 1:
            await self._send_alone(todo[0])
            return
        for _ in range(2):  # the second time, after loading the scripts it lacked
            if not todo:
                return
            self.pipelines += 1
            self.calls += len(todo)
            async with self.client.pipeline(transaction=False) as pipe:
                for call in todo:
                    pipe.evalsha(call.sha, len(call.keys), *call.keys, *fresh(call.args))
                replies = await pipe.execute(raise_on_error=False)
            missing: dict[str, str] = {}
            again: list[_Call] = []
            for call, reply in zip(todo, replies):
                if isinstance(reply, NoScriptError):
                    missing[call.sha] = call.body
                    again.append(call)
                elif call.future.done():
                    continue
                elif isinstance(reply, Exception):
                    call.future.set_exception(reply)
                else:
                    call.future.set_result(reply)
            if not again:
                return
            async with self.client.pipeline(transaction=False) as pipe:
                for body in missing.values():
                    pipe.script_load(body)
                await pipe.execute()
            todo = [call for call in again if not call.future.done()]
        self._fail(todo, NoScriptError("the script is still unknown after loading it"))

    async def _send_alone(self, call: _Call) -> None:
        """A call alone in its pipeline: a plain ``EVALSHA``, as redis-py's scripts
        send it (no pipeline to build), loading the script on a ``NOSCRIPT``."""
        self.pipelines += 1
        self.calls += 1
        keys, args = call.keys, fresh(call.args)
        try:
            try:
                reply = await self.client.evalsha(call.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.client.script_load(call.body)
                reply = await self.client.evalsha(call.sha, len(keys), *keys, *args)
        except ResponseError as error:  # refused: this call only
            self._fail([call], error)
            return
        if not call.future.done():
            call.future.set_result(reply)

    @staticmethod
    def _fail(calls: list[_Call], error: BaseException) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)
