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

Deadline. With ``timeout``, every call is answered within ``timeout`` seconds of being
made, by one deadline per pipeline rather than a timer per call: a pipeline must be back by
the deadline of its oldest call (the first queued: calls queue in the order made), else it
fails with ``TimeoutError`` as a lost connection does (every call of it, and every call
queued behind it). A call can only wait behind pipelines whose own deadlines are earlier
than its, so none waits longer than its own; one found past its deadline when its pipeline
is built (the loop was blocked) fails the same way, unsent.

Fresh arguments. An argument may be a function of no arguments: it is called when the
pipeline is built (``pipelines`` already counts it), after the callers of the pipeline
before it have handled their replies (the sender lets them run first). A chat message's
lowest id is one: a message whose predecessor could not be stored, and was shown under an
id of this process's own, is stored above that id; its deadline is another (see
``realtime.chat.redisstate``).

Groups. A call may name a ``group`` script: the calls with the same group script and the
same keys (a chat room's) that wait for the same pipeline go to Redis as ONE call of the
group script, whose arguments are each call's argument count then its arguments, one call
after the other, and whose reply is a list with one reply per call (an error reply in it
fails that call only). Redis runs the group script atomically, so each call's own steps
stay one step, and in the calls' order. A call joins the group of the pipeline being
gathered only while no call outside any group was queued after that group (so a group
never overtakes such a call), and while the group stays within the bounds (each of its
calls counts toward ``max_count``). It saves Redis and this process the cost of a script
call per message: one ``EVALSHA`` per room and pipeline, not one per message.

The client is given (any ``redis.asyncio`` client with ``pipeline()``), so the same batcher
can run on another connection pool. On a cluster client (``RedisCluster``), whose pipelines
refuse ``EVALSHA``, the calls of a batch are sent one after the other, in order, each a
round trip of its own: no pipelining there, but a group still carries its room's calls in
one script call.
"""

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from redis.asyncio.cluster import RedisCluster
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
    """One script call waiting for its pipeline (or a group of calls: see ``members``)."""

    sha: str
    body: str  # the script's source, to load it again after a NOSCRIPT
    keys: Sequence[Any]
    args: Sequence[Any]
    size: int
    future: "asyncio.Future[Any]" = field(repr=False)
    expires: float  # loop time by which its (first) caller must have an answer
    # A group: the calls sent as this one call of the group script, each (arguments, its
    # caller's future); ``args`` and ``future`` are unused.
    members: Optional[list[tuple[Sequence[Any], "asyncio.Future[Any]"]]] = None
    count: int = 1  # calls it stands for, toward ``max_count``

    def done(self) -> bool:
        """Whether every caller has its answer (or gave up): nothing left to send."""
        if self.members is None:
            return self.future.done()
        return all(future.done() for _, future in self.members)

    def pending(self) -> "_Call":
        """This call without the members whose callers gave up."""
        if self.members is None:
            return self
        live = [member for member in self.members if not member[1].done()]
        if len(live) == len(self.members):
            return self
        return _Call(self.sha, self.body, self.keys, (), self.size, self.future, self.expires,
                     live, len(live))

    def arguments(self) -> list[Any]:
        """The arguments to send, fresh: a group's are each member's count then its own."""
        if self.members is None:
            return fresh(self.args)
        out: list[Any] = []
        for args, _ in self.members:
            values = fresh(args)
            out.append(len(values))
            out.extend(values)
        return out

    def settle(self, reply: Any) -> None:
        """Hand ``reply`` (a result or an exception) to the caller(s)."""
        if self.members is None:
            if not self.future.done():
                if isinstance(reply, BaseException):
                    self.future.set_exception(reply)
                else:
                    self.future.set_result(reply)
            return
        if isinstance(reply, BaseException) or not isinstance(reply, list) \
                or len(reply) != len(self.members):
            error = reply if isinstance(reply, BaseException) else ResponseError(
                f"a group script answered {reply!r} for {len(self.members)} calls")
            for _, future in self.members:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), each in zip(self.members, reply):
            if future.done():
                continue
            if isinstance(each, BaseException):
                future.set_exception(each)
            else:
                future.set_result(each)


class ScriptBatcher:
    """Sends the script calls of a loop turn in one pipeline; see the module docstring.

    Args:
        client: the Redis client whose connections run the pipelines (one at a time).
        max_count: calls per pipeline, at most; 1 is pipelining off.
        max_bytes: bytes of keys and arguments per pipeline, at most.
        timeout: seconds within which every call is answered (see "Deadline"); None: no
            bound of the batcher's own.
    """

    def __init__(self, client: Any, *, max_count: int = DEFAULT_MAX_COUNT,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout: Optional[float] = None) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("a pipeline holds one call at least")
        self.client = client
        # redis-py's cluster pipelines refuse EVALSHA: on a cluster the calls of a batch go
        # one after the other, in order (a group still carries a room's calls in one).
        self._cluster = isinstance(client, RedisCluster)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.timeout = math.inf if timeout is None else timeout
        self._queue: deque[_Call] = deque()  # calls not sent yet, in the order made
        # Groups still taking calls: (group sha, keys) -> the group's call, queued.
        self._open: dict[tuple[str, tuple[Any, ...]], _Call] = {}
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
                   args: Sequence[Any] = (), group: Any = None) -> Any:
        """Run ``script`` (a registered redis-py script: its ``sha`` and ``script``) with
        ``keys`` and ``args`` in the next pipeline; its reply, once Redis has run it. A
        function among ``args`` is called when the pipeline is built. With ``group`` (a
        registered script that runs ``script``'s body once per call: see "Groups"), the
        call may share one script call with the others of its keys.

        Raises:
            redis.exceptions.ResponseError: Redis refused this call (the script failed).
            Exception: whatever failed the whole pipeline (a lost connection, a timeout).
        """
        if self._closed:
            raise RedisConnectionError("the batcher is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        size = size_of(keys) + size_of(args)
        if group is None or self.max_count == 1:
            self._open.clear()  # no group overtakes this call
            self._queue.append(_Call(script.sha, _source(script), keys, args, size, future,
                                     loop.time() + self.timeout))
        else:
            key = (group.sha, tuple(keys))
            joined = self._open.get(key)
            if joined is not None and joined.count < self.max_count \
                    and joined.size + size <= self.max_bytes:
                assert joined.members is not None
                joined.members.append((args, future))
                joined.count += 1
                joined.size += size
            else:
                self._open[key] = joined = _Call(group.sha, _source(group), keys, (), size,
                                                 future, loop.time() + self.timeout,
                                                 [(args, future)])
                self._queue.append(joined)
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
        self._open.clear()
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
        count = 0
        while self._queue and count < self.max_count:
            call = self._queue[0]
            if batch and (size + call.size > self.max_bytes
                          or count + call.count > self.max_count):
                break
            batch.append(self._queue.popleft())
            key = (call.sha, tuple(call.keys))
            if call.members is not None and self._open.get(key) is call:
                del self._open[key]  # on its way: it takes no more calls
            size += call.size
            count += call.count
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
                    # One deadline for the pipeline: its oldest call's (see "Deadline").
                    deadline = min(call.expires for call in batch)
                    if deadline < math.inf:
                        if asyncio.get_running_loop().time() >= deadline:
                            raise TimeoutError("a call waited past its deadline, unsent")
                        async with asyncio.timeout_at(deadline):
                            await self._send(batch)
                    else:
                        await self._send(batch)
                except asyncio.CancelledError:
                    self._fail(batch, RedisConnectionError("the batcher is closed"))
                    raise
                except Exception as error:
                    # Nothing queued behind a failed pipeline may overtake it.
                    behind = list(self._queue)
                    self._queue.clear()
                    self._open.clear()
                    self._fail(batch + behind, error)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Call]) -> None:
        """One batch: a pipeline, then again the calls Redis did not know the script of."""
        # Less the callers that gave up.
        todo = [call.pending() for call in batch if not call.done()]
        if len(todo) == 1 or self._cluster:
            # A cluster client refuses EVALSHA in a pipeline: one call after the other.
            for call in todo:
                await self._send_alone(call)
            return
        for _ in range(2):  # the second time, after loading the scripts it lacked
            if not todo:
                return
            self.pipelines += 1
            self.calls += sum(call.count for call in todo)
            async with self.client.pipeline(transaction=False) as pipe:
                for call in todo:
                    pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.arguments())
                replies = await pipe.execute(raise_on_error=False)
            missing: dict[str, str] = {}
            again: list[_Call] = []
            for call, reply in zip(todo, replies):
                if isinstance(reply, NoScriptError):
                    missing[call.sha] = call.body
                    again.append(call)
                else:
                    call.settle(reply)
            if not again:
                return
            async with self.client.pipeline(transaction=False) as pipe:
                for body in missing.values():
                    pipe.script_load(body)
                await pipe.execute()
            todo = [call.pending() for call in again if not call.done()]
        self._fail(todo, NoScriptError("the script is still unknown after loading it"))

    async def _send_alone(self, call: _Call) -> None:
        """A call alone in its pipeline (or on a cluster): a plain ``EVALSHA``, as
        redis-py's scripts send it (no pipeline to build), loading the script on a
        ``NOSCRIPT``."""
        self.pipelines += 1
        self.calls += call.count
        keys, args = call.keys, call.arguments()
        try:
            try:
                reply = await self.client.evalsha(call.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.client.script_load(call.body)
                reply = await self.client.evalsha(call.sha, len(keys), *keys, *args)
        except ResponseError as error:  # refused: this call only
            self._fail([call], error)
            return
        call.settle(reply)

    @staticmethod
    def _fail(calls: list[_Call], error: BaseException) -> None:
        for call in calls:
            call.settle(error)


def _source(script: Any) -> str:
    """A registered script's source, to load it again after a NOSCRIPT."""
    return script.script.decode() if isinstance(script.script, bytes) else script.script
