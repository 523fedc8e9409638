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

Order. Pipelines go out in order on one connection, and Redis runs a connection's commands
in the order they were sent: a call made after another runs after it. That is what keeps a
chat room's ids in the order its messages were sent (a message sent later never gets a
lower id, nor is published before an earlier one). Results are handed back in the same
order, so callers resume in commit order. While a pipeline is on its way, new calls gather
for the next one: the busier the process, the bigger the batch. (Taking only one turn's
calls per pipeline would not do: callers answered together call again together, so a
process would keep as many small pipelines going round as there were turns at the start of
a burst.)

Two in flight. Up to ``depth`` pipelines (2) are on their way at once, on the batcher's one
connection: the next is written while Redis runs the one before, and the replies are read
back in the order the pipelines were written (Redis answers a connection in order). So
Redis's work on one pipeline overlaps this process's work on the next (building it, reading
and handing out the replies of the one before) instead of each waiting on the other. For
the two to overlap from the start, a burst found with nothing on its way (at least
``SPLIT_AT`` calls) goes as two pipelines, half each, the second written right behind the
first: Redis runs the first while this process writes the second, and this process hands
out the first's replies (whose callers make their next calls, the next pipeline) while
Redis runs the second; from then on each works on one pipeline while the other is with the
other side. A pipeline written behind one not answered yet is *chained* to it (``chained``
is True while its arguments are read): callers that need to know what became of the calls
before theirs (see "Fresh arguments") must treat a chain as one pipeline; the chat state
gives a chained pipeline's messages the Redis deadline of the one before. A chain lasts at
most a quarter of ``timeout`` from its first call: past that, the next pipeline waits until
every one on its way is answered, and starts a new chain.

Failures. Every caller gets its own result or its own exception. A script error (a refused
command) fails that call only. A failure of the pipeline itself (the connection lost, a
timeout) fails every call of it, and every call queued behind it, with that exception: none
of them is known to be stored, and a later call must not be stored before an earlier one
whose fate is unknown; a pipeline chained behind a failed one fails with it (its connection
is dropped, so nothing is read out of step). A ``NOSCRIPT`` answer (Redis restarted,
``SCRIPT FLUSH``) loads the script and sends the calls that got it again, in their order,
in a pipeline of their own (on another of the client's connections), before the replies of
any pipeline chained behind are handed out (every chained one got ``NOSCRIPT`` too, and is
sent again after it). (Every ``EVALSHA`` of a pipeline that reaches a flushed Redis fails
alike, since nothing in it loads a script; only another client loading the same script in
the middle of one pipeline could let a later call of it run before an earlier one is
retried.)

Deadline. With ``timeout``, every call is answered within ``timeout`` seconds of being
made, by one deadline per pipeline rather than a timer per call: a pipeline must be back by
the deadline of its oldest call (the first queued: calls queue in the order made), else it
fails with ``TimeoutError`` as a lost connection does (every call of it, and every call
queued behind it). A call can only wait behind pipelines whose own deadlines are earlier
than its, so none waits longer than its own; one found past its deadline when its pipeline
is built (the loop was blocked) fails the same way, unsent.

Fresh arguments. An argument may be a function of no arguments: it is called when the
pipeline is built (``pipelines`` already counts it, ``chained`` says whether one is still
on its way before it), after the callers of every pipeline answered so far have handled
their replies (the sender lets them run first). A chat message's lowest id is one: a
message whose predecessor could not be stored, and was shown under an id of this process's
own, is stored above that id; its deadline is another (see ``realtime.chat.redisstate``).

Groups. A call may name a ``group`` script: the calls with the same group script and the
same keys (a chat room's) that wait for the same pipeline go to Redis as ONE call of the
group script, whose reply is a list with one reply per call (an error reply in it fails
that call only). Its arguments are, call after call, a count then arguments: a call's
arguments that end as the call before's (a room's channels, bounds, deadline) are not sent
again: a count n >= 0 says that only its first n are sent, the others are the call
before's; -n says that all of them are sent, n (the first call, or a call with another
number of arguments). ``GROUP_CALLS`` reads them back in Lua. Redis runs the group script
atomically, so each call's own steps stay one step, and in the calls' order. A call joins
the group of the pipeline being gathered only while no call outside any group was queued
after that group (so a group never overtakes such a call), and while the group stays within
the bounds (each of its calls counts toward ``max_count``). It saves Redis and this process
the cost of a script call per message: one ``EVALSHA`` per room and pipeline, not one per
message.

The client is given (any ``redis.asyncio`` client with ``pipeline()``), so the same batcher
can run on another connection pool. On a cluster client (``RedisCluster``), whose pipelines
refuse ``EVALSHA``, the calls of a batch are sent one after the other, in order, each a
round trip of its own: no pipelining there (nor two in flight), but a group still carries
its room's calls in one script call. With ``max_count=1`` too, one call is on its way at a
time.
"""

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

# How a group script reads its calls' arguments (see "Groups"): ``for args, given in
# calls() do``, each call's arguments (one table, reused from call to call: copy what must
# outlive the call) and how many of them were sent (the others are the call before's).
GROUP_CALLS = """
local function calls()
    local at, args = 1, {}
    return function()
        if at > #ARGV then return nil end
        local given = tonumber(ARGV[at])
        if given < 0 then
            given = -given
            args = {}
        end
        for i = 1, given do
            args[i] = ARGV[at + i]
        end
        at = at + given + 1
        return args, given
    end
end
"""

DEFAULT_MAX_COUNT = 500  # calls per pipeline
DEFAULT_MAX_BYTES = 1024 * 1024  # bytes of keys and arguments per pipeline
DEFAULT_DEPTH = 2  # pipelines on their way at once
CHAIN_SHARE = 0.25  # of ``timeout``: how long a chain of pipelines may go on
SPLIT_AT = 16  # calls queued with nothing on its way from which they go as two pipelines
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
        """The arguments to send, fresh: a group's are each member's count then those of
        its own that are not the member before's (see "Groups")."""
        if self.members is None:
            return fresh(self.args)
        out: list[Any] = []
        before: list[Any] = []
        for args, _ in self.members:
            values = fresh(args)
            given = len(values)
            if given == len(before):
                # The same type too: 1 and 1.0 are equal but not the same on the wire.
                while given and type(values[given - 1]) is type(before[given - 1]) \
                        and values[given - 1] == before[given - 1]:
                    given -= 1
                out.append(given)
            else:
                out.append(-given)
            out.extend(values[:given])
            before = values
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
        depth: pipelines on their way at once, at most (see "Two in flight"); 1 on a
            cluster and with ``max_count=1``, whatever is given.
    """

    def __init__(self, client: Any, *, max_count: int = DEFAULT_MAX_COUNT,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout: Optional[float] = None,
                 depth: int = DEFAULT_DEPTH) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("a pipeline holds one call at least")
        if depth < 1:
            raise ValueError("one pipeline at least must be on its way")
        self.client = client
        # redis-py's cluster pipelines refuse EVALSHA: on a cluster the calls of a batch go
        # one after the other, in order (a group still carries a room's calls in one).
        self._cluster = isinstance(client, RedisCluster)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.timeout = math.inf if timeout is None else timeout
        self.depth = 1 if self._cluster or max_count == 1 else depth
        # With depth above 1: the connection the pipelines go on (one of the pool's, while
        # any is on its way), and the pipelines on their way, oldest first, each as the
        # future of its end (set when its callers have their replies, or their error).
        self._wire: Optional[_Wire] = None
        self._flights: deque[asyncio.Future[None]] = deque()
        self._landing: set[asyncio.Task[None]] = set()  # the tasks reading them
        self._chain_since = 0.0  # loop time of the first call of the chain on its way
        # Whether the pipeline being built goes out behind one not answered yet.
        self.chained = False
        self._halved = False  # the last pipeline taken is the first half of what was queued
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
        tasks = [task for task in (sender, *self._landing) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waiting = list(self._queue)
        self._queue.clear()
        self._open.clear()
        self._fail(waiting, RedisConnectionError("the batcher is closed"))
        wire, self._wire = self._wire, None
        if wire is not None:
            await wire.drop(RedisConnectionError("the batcher is closed"))

    def _flush(self) -> None:
        """End of the turn: have what is queued sent, unless the sender is at work (it
        takes what is queued as soon as a pipeline may go)."""
        self._flush_scheduled = False
        if self._queue and self._sender is None and not self._closed:
            self._sender = asyncio.create_task(self._send_all(), name="redis-batcher")

    def _take(self) -> list[_Call]:
        """The next pipeline's calls: the oldest queued, within the bounds; with nothing on
        its way, room for two and ``SPLIT_AT`` calls queued, half of them (see "Two in
        flight")."""
        most = self.max_count
        if self._halved:  # the second half: whole, whatever landed meanwhile
            self._halved = False
        elif self.depth > 1 and not self._flights:
            queued = sum(call.count for call in self._queue)
            if queued >= SPLIT_AT:
                most = min(most, (queued + 1) // 2)
                self._halved = True
        batch: list[_Call] = []
        size = 0
        count = 0
        while self._queue and count < most:
            call = self._queue[0]
            if batch and (size + call.size > self.max_bytes
                          or count + call.count > most):
                break
            batch.append(self._queue.popleft())
            key = (call.sha, tuple(call.keys))
            if call.members is not None and self._open.get(key) is call:
                del self._open[key]  # on its way: it takes no more calls
            size += call.size
            count += call.count
        return batch

    def _blocking(self) -> Optional["asyncio.Future[None]"]:
        """The pipeline on its way that the next must wait for, if any: the oldest while
        ``depth`` are on their way, the newest once the chain is too old to go on or its
        connection failed."""
        if not self._flights:
            return None
        if self._wire is None:  # they failed: a new chain starts once they are all done
            return self._flights[-1]
        if len(self._flights) >= self.depth:
            return self._flights[0]
        now = asyncio.get_running_loop().time()
        if now >= self._chain_since + self.timeout * CHAIN_SHARE:
            return self._flights[-1]
        return None

    async def _send_all(self) -> None:
        """Send pipelines, in order, until nothing is queued (those on their way are read
        by tasks of their own)."""
        try:
            while self._queue:
                blocking = self._blocking()
                if blocking is not None:
                    await asyncio.wait((blocking,))
                    continue
                # The callers of the pipelines answered have their replies: let them act
                # on them (see "Fresh arguments") before the next one is built.
                await asyncio.sleep(0)
                if self._blocking() is not None:
                    continue
                batch = self._take()
                if not batch:
                    break
                try:
                    # One deadline for the pipeline: its oldest call's (see "Deadline").
                    deadline = min(call.expires for call in batch)
                    if asyncio.get_running_loop().time() >= deadline:
                        raise TimeoutError("a call waited past its deadline, unsent")
                    if self.depth > 1:
                        await self._launch(batch, deadline)
                    elif deadline < math.inf:
                        async with asyncio.timeout_at(deadline):
                            await self._send(batch)
                    else:
                        await self._send(batch)
                except asyncio.CancelledError:
                    self._fail(batch, RedisConnectionError("the batcher is closed"))
                    raise
                except Exception as error:
                    self._failed(batch, error)
        finally:
            self._sender = None

    def _failed(self, batch: list[_Call], error: BaseException) -> None:
        """``batch``'s pipeline failed: fail its calls and every call queued behind it
        (nothing may overtake it)."""
        behind = list(self._queue)
        self._queue.clear()
        self._open.clear()
        self._fail(batch + behind, error)

    async def _launch(self, batch: list[_Call], deadline: float) -> None:
        """Write ``batch``'s pipeline on the batcher's connection, behind those on their
        way, and leave its replies to a task that reads them once theirs are read."""
        todo = [call.pending() for call in batch if not call.done()]
        if not todo:
            return
        loop = asyncio.get_running_loop()
        self.chained = bool(self._flights)
        if not self.chained and deadline < math.inf:
            self._chain_since = deadline - self.timeout  # when its oldest call was made
        if self._wire is None:
            self._wire = _Wire(self.client.connection_pool)
        wire = self._wire
        self._count(todo)
        try:
            commands = [("EVALSHA", call.sha, len(call.keys), *call.keys, *call.arguments())
                        for call in todo]
        finally:
            self.chained = False
        try:
            async with asyncio.timeout_at(_when(deadline)):
                await wire.write(commands)
        except BaseException as error:
            if self._wire is wire:
                self._wire = None
            await wire.drop(error)
            await wire.done()
            raise
        landed = loop.create_future()
        previous = self._flights[-1] if self._flights else None
        self._flights.append(landed)
        task = asyncio.create_task(self._land(todo, wire, previous, deadline, landed),
                                   name="redis-batcher-replies")
        self._landing.add(task)
        task.add_done_callback(self._landing.discard)

    async def _land(self, todo: list[_Call], wire: "_Wire",
                    previous: Optional["asyncio.Future[None]"], deadline: float,
                    landed: "asyncio.Future[None]") -> None:
        """Read the replies of a pipeline written on ``wire`` once ``previous``'s are read,
        and hand them out; on a failure, fail it and what is queued, and drop ``wire``."""
        try:
            try:
                async with asyncio.timeout_at(_when(deadline)):
                    if previous is not None:
                        await asyncio.wait((previous,))
                    replies = await wire.read(len(todo))
                    await self._answer(todo, replies)
            except asyncio.CancelledError:
                self._fail(todo, RedisConnectionError("the batcher is closed"))
                raise
            except Exception as error:
                if self._wire is wire:
                    self._wire = None
                await wire.drop(error)
                self._failed(todo, error)
        finally:
            await wire.done()
            self._flights.remove(landed)
            landed.set_result(None)

    def _count(self, todo: list[_Call]) -> None:
        """A round trip of ``todo`` is about to be built."""
        self.pipelines += 1
        self.calls += sum(call.count for call in todo)

    async def _send(self, batch: list[_Call]) -> None:
        """One batch, nothing else on its way: a pipeline on any connection of the client
        (or the calls one by one), then again the calls Redis did not know the script of."""
        # Less the callers that gave up.
        todo = [call.pending() for call in batch if not call.done()]
        if len(todo) == 1 or self._cluster:
            # A cluster client refuses EVALSHA in a pipeline: one call after the other.
            for call in todo:
                await self._send_alone(call)
            return
        if not todo:
            return
        self._count(todo)
        await self._answer(todo, await self._pool_round(todo))

    async def _pool_round(self, todo: list[_Call]) -> list[Any]:
        """``todo``'s calls in one pipeline on a connection of the client's pool."""
        async with self.client.pipeline(transaction=False) as pipe:
            for call in todo:
                pipe.evalsha(call.sha, len(call.keys), *call.keys, *call.arguments())
            return await pipe.execute(raise_on_error=False)

    async def _answer(self, todo: list[_Call], replies: list[Any]) -> None:
        """Hand each call of ``todo`` its reply; those that got ``NOSCRIPT`` are sent
        again, in their order, once the scripts are loaded (on the client's pool)."""
        for attempt in range(2):
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
            if attempt:
                break
            async with self.client.pipeline(transaction=False) as pipe:
                for body in missing.values():
                    pipe.script_load(body)
                await pipe.execute()
            todo = [call.pending() for call in again if not call.done()]
            if not todo:
                return
            self._count(todo)
            replies = await self._pool_round(todo)
        self._fail(again, NoScriptError("the script is still unknown after loading it"))

    async def _send_alone(self, call: _Call) -> None:
        """A call alone in its pipeline (or on a cluster): a plain ``EVALSHA``, as
        redis-py's scripts send it (no pipeline to build), loading the script on a
        ``NOSCRIPT``."""
        self._count([call])
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


def _when(deadline: float) -> Optional[float]:
    """``deadline`` for ``asyncio.timeout_at``: None for none."""
    return None if deadline == math.inf else deadline


def _source(script: Any) -> str:
    """A registered script's source, to load it again after a NOSCRIPT."""
    return script.script.decode() if isinstance(script.script, bytes) else script.script


class _Wire:
    """A connection of a pool on which several pipelines are on their way at once: written
    one after the other, their replies read back in the same order (by one reader at a
    time: each pipeline's reader waits for the one before). It is taken from the pool when
    the first pipeline is written and given back once the last one written is read, so
    each chain starts on a connection the pool checked (one Redis closed while idle, as a
    restart does, is replaced, not written to)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._connection: Any = None
        self._users = 0  # pipelines written and not read yet (or being written)
        # What ended the connection (a pipeline's failure): the later pipelines fail alike.
        self.failed: Optional[BaseException] = None

    async def write(self, commands: list[tuple[Any, ...]]) -> None:
        """Send ``commands`` (each a command's words) in one write; ``done()`` once their
        replies are read (or they failed)."""
        self._users += 1
        if self.failed is not None:  # never on another connection, ahead of those before
            raise self.failed
        if self._connection is None:
            self._connection = await self.pool.get_connection()
        connection = self._connection
        await connection.send_packed_command(connection.pack_commands(commands),
                                             check_health=False)

    async def read(self, count: int) -> list[Any]:
        """The next ``count`` replies, an error reply as its exception."""
        if self.failed is not None:
            raise self.failed
        connection = self._connection
        if connection is None:
            raise RedisConnectionError("the batcher's connection was dropped")
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(await connection.read_response())
            except ResponseError as error:
                replies.append(error)
        return replies

    async def done(self) -> None:
        """A pipeline written is read (or failed): the last one gives the connection back."""
        self._users -= 1
        if self._users == 0 and self._connection is not None:
            connection, self._connection = self._connection, None
            await self.pool.release(connection)

    async def drop(self, error: BaseException) -> None:
        """Close the connection (replies may be left on it) and give it back to the pool;
        a pipeline written or read on it later fails with ``error``."""
        if self.failed is None:
            self.failed = error
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
            await self.pool.release(connection)
