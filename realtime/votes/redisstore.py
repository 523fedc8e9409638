"""Polls on Redis: ``RedisPollStore`` keeps polls and votes where every process sees them.

It has the coroutine API of ``PollStore`` (``realtime.votes.store.Polls``), so the vote handlers
work unchanged with either. Several server processes on one Redis share every poll: a vote
counted on one shows on all, and counts once.

Keys, under ``prefix`` (``realtime:``), for a poll ``<id>``, each with the id as its hash
tag so a poll lives in one slot of a Redis Cluster (``realtime.storage.rediskeys``):

- ``poll:{<id>}``: a hash of the poll's fields (``title``, ``one_vote_per_voter``, ``listed``,
  ``closed``, ``created_at``, ``manage_hash``, ``code``, ``results``, ``revealed``;
  ``options``, the JSON list of
  ``[id, label, gloss]`` in order);
- ``poll:{<id>}:votes``: a hash, option id -> count, every option present from creation;
- ``poll:{<id>}:voters``: a hash, voter id -> the option it chose (one-vote polls only; a hash
  rather than a set so a reconnecting page is told which option it chose);
- ``poll:{<id>}:viewers``: a hash, process id -> ``<count>:<deadline ms>``, the viewers
  connected to the poll through each process (``PARTICIPANTS``); a field whose deadline has
  passed (its process crashed, or stopped refreshing) counts nothing and is removed, and
  the key expires once no process refreshes it;
- ``code:<code>``: the id of the poll with that join code (``realtime/votes/ids.py``), set
  (``NX``) before the poll is created and deleted with it, each as a command of its own: the
  code's key is not the poll's, so no script may touch both (a Redis Cluster would put them
  in different slots); a code whose poll is gone finds nothing;
- ``polls:listed``: a sorted set of the listed polls' ids, scored by ``polls:seq``, a counter
  (so "newest first" never depends on two clocks agreeing). Both live in a slot of their
  own: a poll is created (``CREATE``), then listed; deleted, then unlisted. A listing that
  names a poll no longer there skips it.

Polls from before the hash tags (``poll:<id>``, ``poll:<id>:votes``, ``poll:<id>:voters``)
are adopted when first missed: a call that finds no ``poll:{<id>}`` renames the old keys
(``ADOPT``, one Redis only: a cluster never held them) and tries again, so no poll vanishes
in the upgrade.

One vote per voter, atomically across processes: ``VOTE``, a Lua script, checks that the
poll exists and is open and that the option exists, then, for a one-vote poll, ``HSETNX``
the voter (0: ``already_voted``), increments the option and returns the new counts. Redis
runs a script as one step, so no other command (no other process's vote) comes between the
check and the increment, and the counts it returns are exactly those with this vote in
them. The script is sent once and then called by its SHA (redis-py's ``register_script``
loads it again after a Redis restart).

Durability is Redis's: an acknowledged vote survives a crash only if Redis runs with
``appendonly yes`` and ``appendfsync always`` (``deploy/redis.conf``). On a Redis Cluster a
vote is acknowledged only once a replica of its master has it too (``WAIT``, see
``_replicated``), so a failover does not lose it. The script's writes go
to the AOF as one ``MULTI``/``EXEC`` block, so a crash keeps both the voter and its count or
neither.

Faults. Every call, waiting for its turn included, is bounded by ``timeout`` seconds (2 by
default); a Redis that is down, refuses writes or does not answer makes it raise
``PollsUnavailable``, a ``ClientError`` coded ``unavailable``, so the socket answers with an
error frame and never sends ``voted``. A vote carries a deadline on Redis's clock (half the
call's timeout), past which the script counts nothing (``late``, answered ``unavailable``):
a vote Redis runs after its voter was refused (Redis frozen, the call queued) is not
counted, so what is acknowledged is what is counted, in both directions. One warning is
logged per outage, not per call.

Ordering. The votes of one loop turn go to Redis in one pipeline of ``VOTE`` scripts
(``realtime.storage.redisbatch``; each vote still one atomic script), one pipeline at a
time, and their tallies come back in the order Redis counted them, so the vote session
publishes them in commit order (``realtime/votes/session.py``).
The other calls run one at a time, in order, on a connection of their own; a snapshot and
a vote may pass each other, which the session's reasoning allows (a tally's ``total`` says
whether a snapshot counts it). With ``batch=1`` every call, votes included, runs one at a
time, in the order made.
"""

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime.wire.messages import ClientError
from realtime.votes.store import (
    DEMO, DEMO_ID, LIST_LIMIT, VOTE_REFUSALS, Choice, choices, new_manage_token, refused,
    token_hash,
)
from realtime.votes.ids import CODE, new_join_code, new_poll_id
from realtime.storage.redisbatch import DEFAULT_MAX_COUNT, ScriptBatcher
from realtime.storage.redisdown import FAILURES, Outage
from realtime.storage.rediskeys import client, close, is_cluster, tagged
from realtime.votes.spec import NewPoll, Option, Poll, Tally

log = logging.getLogger("realtime.redispolls")

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0  # seconds; the contract is an answer within 5 s with Redis down
# On a cluster: milliseconds a vote waits for a replica of its master to have it.
REPLICA_WAIT_MS = 1000
# Ids we look up: what new_poll_id draws, and the demo's. Anything else (a ":" in
# particular, which could name another key) is no poll.
POLL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# KEYS: poll, votes, voters. ARGV: option id, voter id ("" for none), the deadline (Redis
# milliseconds). Returns a refusal code (a string) or the counts (HGETALL of the votes
# hash); ``late`` (nothing counted) past the deadline: the voter was answered
# ``unavailable`` by then, so a vote Redis runs late is never counted unacknowledged.
VOTE = """
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[3]) then
    return 'late'
end
local poll = redis.call('HMGET', KEYS[1], 'one_vote_per_voter', 'closed')
if not poll[1] then return 'no_such_poll' end
if poll[2] == '1' then return 'poll_closed' end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 'no_such_option' end
if poll[1] == '1' then
    if ARGV[2] == '' then return 'no_voter_id' end
    if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1]) == 0 then return 'already_voted' end
end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return redis.call('HGETALL', KEYS[2])
"""

# A ballot that VOTE does not take: several options (multiple choice), or a voter changing
# its vote where the poll allows it. KEYS: poll, votes, voters. ARGV: voter id, the option
# ids, then the deadline (as ``VOTE``'s). Returns a refusal code or the counts. The voter's
# old ballot (ids joined by commas) gives back its votes before the new one is counted, so
# a voter counts once.
BALLOT = """
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
    return 'late'
end
local poll = redis.call('HMGET', KEYS[1], 'one_vote_per_voter', 'closed', 'allow_change',
                        'max_choices')
if not poll[1] then return 'no_such_poll' end
if poll[2] == '1' then return 'poll_closed' end
if #ARGV - 2 > tonumber(poll[4] or '1') then return 'too_many_choices' end
for i = 2, #ARGV - 1 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then return 'no_such_option' end
end
if poll[1] ~= '1' then return 'too_many_choices' end
if ARGV[1] == '' then return 'no_voter_id' end
local old = redis.call('HGET', KEYS[3], ARGV[1])
if old and poll[3] ~= '1' then return 'already_voted' end
if old then
    for id in string.gmatch(old, '[^,]+') do redis.call('HINCRBY', KEYS[2], id, -1) end
end
for i = 2, #ARGV - 1 do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
redis.call('HSET', KEYS[3], ARGV[1], table.concat(ARGV, ',', 2, #ARGV - 1))
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: the poll's hash. Whether its counts may be shown and its votes changed: {results,
# revealed, allow_change} (a script, so a vote's pipeline can carry it).
FLAGS = """
return redis.call('HMGET', KEYS[1], 'results', 'revealed', 'allow_change')
"""

# KEYS: poll, votes. ARGV: id, title, one_vote_per_voter, listed, created_at, options
# JSON, manage hash ("" for none), join code, results, allow_change, max_choices, then the
# option ids. 0 if the id is taken.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[2], 'one_vote_per_voter', ARGV[3],
           'listed', ARGV[4], 'closed', '0', 'created_at', ARGV[5], 'options', ARGV[6],
           'manage_hash', ARGV[7], 'code', ARGV[8], 'results', ARGV[9], 'revealed', '0',
           'allow_change', ARGV[10], 'max_choices', ARGV[11])
redis.call('DEL', KEYS[2])
for i = 12, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], 0) end
return 1
"""

# KEYS: the poll's three keys, then its three keys from before the hash tags. Renames the
# old ones if the poll has none yet; 1 if it adopted a poll.
ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
for i = 1, 3 do
    if redis.call('EXISTS', KEYS[i + 3]) == 1 then redis.call('RENAME', KEYS[i + 3], KEYS[i]) end
end
return 1
"""

# KEYS: poll, votes, voters. ARGV: voter id ("" for none). Returns the poll's fields, its
# counts (both as HGETALL does) and the option the voter chose (false for none), read in
# one step: a script rather than MULTI, which redis-py's cluster client mishandles.
READ = """
local chosen = false
if ARGV[1] ~= '' then chosen = redis.call('HGET', KEYS[3], ARGV[1]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), chosen}
"""

# KEYS: poll, votes, voters, viewers. ARGV: this process's id, its viewers of the poll, the
# milliseconds its count stays valid. Sets (or, at 0, removes) the process's count, drops
# the counts of processes past their deadline, and returns {voters, viewers}: voters the
# distinct voters of a one-vote poll (the voters hash), the votes of an every-click poll
# (which knows no voters); viewers every live process's count. false if there is no poll.
PARTICIPANTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[4])
  return false
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. ':' .. (now + ttl))
  redis.call('PEXPIRE', KEYS[4], ttl)
else
  redis.call('HDEL', KEYS[4], ARGV[1])
end
local viewers = 0
local fields = redis.call('HGETALL', KEYS[4])
for i = 1, #fields, 2 do
  local count, deadline = string.match(fields[i + 1], '^(%d+):(%d+)$')
  if count and tonumber(deadline) > now then
    viewers = viewers + tonumber(count)
  else
    redis.call('HDEL', KEYS[4], fields[i])
  end
end
local voters = 0
if redis.call('HGET', KEYS[1], 'one_vote_per_voter') == '1' then
  voters = redis.call('HLEN', KEYS[3])
else
  for _, n in ipairs(redis.call('HVALS', KEYS[2])) do voters = voters + tonumber(n) end
end
return {voters, viewers}
"""

# KEYS: poll. ARGV: the field ("closed", "revealed"), its value. 0 if there is no such poll.
SET_CLOSED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: poll, votes, voters. 1 if the poll existed.
DELETE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3])
return existed
"""


class NotReplicated(RedisError):
    """On a cluster: no replica took a vote's writes in time (its master alone has it)."""


class PollsUnavailable(ClientError):
    """Redis did not answer in time (or refused to write): nothing was acknowledged."""

    def __init__(self) -> None:
        super().__init__(
            "unavailable", "Voting is unavailable right now; try again in a moment.")


def ordered_counts(flat: list[str]) -> dict[str, int]:
    """``HGETALL``'s ``[id, count, id, count, ...]`` as a dict in option order (ids are
    "1", "2", ... by position)."""
    counts = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return dict(sorted(counts.items(), key=lambda item: int(item[0])))


def pairs(flat: list[str]) -> dict[str, str]:
    """``HGETALL``'s ``[field, value, field, value, ...]`` as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def parse_poll(poll_id: str, fields: dict[str, str], votes: dict[str, str]) -> Optional[Poll]:
    """A ``Poll`` from its hash and its votes hash; None if the poll hash is missing."""
    if "title" not in fields:
        return None
    options = tuple(
        Option(option_id, label, int(votes.get(option_id, 0)), gloss)
        for option_id, label, gloss in json.loads(fields["options"])
    )
    return Poll(
        poll_id, fields["title"], fields["one_vote_per_voter"] == "1", options,
        listed=fields["listed"] == "1", closed=fields["closed"] == "1",
        code=fields.get("code") or None, results=fields.get("results") or "live",
        revealed=fields.get("revealed") == "1", allow_change=fields.get("allow_change") == "1",
        max_choices=int(fields.get("max_choices") or 1),
    )


class RedisPollStore:
    """Polls and their votes in Redis, shared by every process using the same Redis and
    prefix; see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: put before every key, to share one Redis between deployments.
        timeout: seconds any call may take, its wait for the connection included.
        batch: votes per pipeline, at most; 1 sends each vote on its own, in turn.

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """

    def __init__(self, url: str, prefix: str = "realtime:", *,
                 timeout: float = DEFAULT_TIMEOUT, batch: int = DEFAULT_MAX_COUNT) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        # No redis-py retries (the caller retries, once told "unavailable"); every socket
        # operation times out, so a half-open connection fails a call instead of hanging
        # it. RESP2, as the broker pins it. Two connections: the calls' (one at a time) and
        # the batcher's (one pipeline at a time).
        self._redis = client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2,
            decode_responses=True, client_name="realtime-polls", max_connections=2,
        )
        self._cluster = is_cluster(url)
        self._offset_ms = 0.0  # Redis's clock minus this process's, in milliseconds
        self._stale_map = False  # a cluster call failed: refresh the slot map first
        self._vote = self._redis.register_script(VOTE)
        self._ballot = self._redis.register_script(BALLOT)
        self._flags = self._redis.register_script(FLAGS)
        self._create_script = self._redis.register_script(CREATE)
        self._set_closed_script = self._redis.register_script(SET_CLOSED)
        self._delete_script = self._redis.register_script(DELETE)
        self._adopt_script = self._redis.register_script(ADOPT)
        self._read_script = self._redis.register_script(READ)
        self._participants_script = self._redis.register_script(PARTICIPANTS)
        # This process's field in each poll's viewers hash (a fresh one per store, so a
        # restarted process never adds to its predecessor's count).
        self.process_id = secrets.token_hex(8)
        self._turn = asyncio.Lock()  # one call at a time, in order (see Ordering)
        # Sends the script calls of each loop turn in one pipeline (counts its pipelines).
        self.batcher = ScriptBatcher(self._redis, max_count=batch)
        # Every call still tries Redis during an outage (each bounded by timeout): the first
        # that answers ends it, with no probe to wait for.
        self._outage = Outage(log, url, "polls", "votes are refused until it answers",
                              "polls are back")
        # Whether the demo poll is known to exist: checked before the first call, and again
        # after an outage (a Redis that comes back may have come back empty).
        self._demo_ready = False
        self._closed = False

    def _key(self, poll_id: str, part: str = "") -> str:
        """The key of one part of a poll; the poll's id is its hash tag (one slot)."""
        return f"{self.prefix}poll:{tagged(poll_id)}{part}"

    def _poll_keys(self, poll_id: str) -> list[str]:
        return [self._key(poll_id), self._key(poll_id, ":votes"), self._key(poll_id, ":voters")]

    def _code_key(self, code: str) -> str:
        return f"{self.prefix}code:{code}"

    async def _adopted(self, poll_id: str) -> bool:
        """Whether a poll kept under the keys from before the hash tags was just moved to
        its keys of now (``ADOPT``); never on a cluster, which never held them."""
        if self._cluster:
            return False
        old = [f"{self.prefix}poll:{poll_id}{part}" for part in ("", ":votes", ":voters")]
        return bool(await self._adopt_script(keys=[*self._poll_keys(poll_id), *old]))

    @property
    def _listed(self) -> str:
        return f"{self.prefix}polls:listed"

    async def _call(self, job: Callable[[], Awaitable[T]], batched: bool = False) -> T:
        """Run ``job`` in this store's turn, bounded by ``timeout``; Redis failures become
        ``PollsUnavailable``, logged once per outage. A ``batched`` job (one that only goes
        through the batcher, which keeps its order) takes no turn, once the demo poll is
        known to exist."""
        if self._closed:
            raise RuntimeError("the poll store is closed")
        try:
            async with asyncio.timeout(self.timeout):
                if batched:
                    if not self._demo_ready:
                        async with self._turn:
                            await self._ensure_demo()
                    result = await job()
                else:
                    async with self._turn:
                        await self._ensure_demo()
                        result = await job()
        except FAILURES as error:
            self._demo_ready = False
            self._outage.failed(error)  # one warning per outage
            raise PollsUnavailable() from error
        self._outage.answered()
        return result

    # The Polls API.

    async def start(self) -> None:
        """Check that Redis answers and create the demo poll if it is missing. With Redis
        down it logs a warning and returns: the server starts, votes answer
        ``unavailable``, and the demo poll is created on the first call Redis answers."""
        try:
            await self._call(self._redis.ping)
        except PollsUnavailable:
            log.warning("starting without Redis for polls; they come back when it answers")

    async def create(self, new: NewPoll) -> tuple[Poll, str]:
        """Store a new poll under a fresh random id; return it and its manage token."""
        token = new_manage_token()
        for _ in range(5):
            poll_id = new_poll_id()
            if await self._call(lambda: self._insert(poll_id, new, token_hash(token))):
                poll = await self.get(poll_id)
                if poll is not None:
                    return poll, token
        raise RuntimeError("could not find a free poll id")

    async def is_owner(self, poll_id: str, token: Optional[str]) -> Optional[bool]:
        """Whether ``token`` is the poll's manage token; None if there is no such poll."""
        if not POLL_ID.fullmatch(poll_id):
            return None

        async def job() -> list[Optional[str]]:
            fields = await self._redis.hmget(self._key(poll_id), ["title", "manage_hash"])
            if fields[0] is None and await self._adopted(poll_id):
                fields = await self._redis.hmget(self._key(poll_id), ["title", "manage_hash"])
            return list(fields)
        title, stored = await self._call(job)
        if title is None:
            return None
        if not stored or not token:
            return False
        return hmac.compare_digest(stored, token_hash(token))

    async def set_closed(self, poll_id: str, closed: bool) -> Optional[Poll]:
        """Close or reopen a poll; the poll as it is now, or None if there is none."""
        if not POLL_ID.fullmatch(poll_id):
            return None
        return await self._set_flag(poll_id, "closed", closed)

    async def reveal(self, poll_id: str) -> Optional[Poll]:
        """Reveal a hidden poll's results (for good); the poll as it is now, or None."""
        return await self._set_flag(poll_id, "revealed", True)

    async def _set_flag(self, poll_id: str, field: str, value: bool) -> Optional[Poll]:
        if not POLL_ID.fullmatch(poll_id):
            return None
        found = await self._call(lambda: self._again_if_adopted(poll_id, lambda: (
            self._set_closed_script(keys=[self._key(poll_id)],
                                    args=[field, "1" if value else "0"]))))
        return await self.get(poll_id) if found else None

    async def delete(self, poll_id: str) -> bool:
        """Delete a poll with its counts and voters; False if there was none."""
        if not POLL_ID.fullmatch(poll_id):
            return False

        async def job() -> bool:
            code = await self._redis.hget(self._key(poll_id), "code")
            existed = await self._delete_script(keys=self._poll_keys(poll_id))
            if code:
                await self._redis.delete(self._code_key(code))
            return bool(existed)
        existed = await self._call(lambda: self._again_if_adopted(poll_id, job))
        # Unlisted after: a listing between the two skips the poll it cannot read.
        await self._call(lambda: self._redis.zrem(self._listed, poll_id))
        return bool(existed)

    async def find_code(self, code: str) -> Optional[str]:
        """The id of the poll with that join code, or None."""
        if not CODE.fullmatch(code):
            return None
        return await self._call(lambda: self._redis.get(self._code_key(code)))

    async def get(self, poll_id: str) -> Optional[Poll]:
        """The poll with its current counts, or None."""
        found = await self.snapshot(poll_id, None)
        return None if found is None else found[0]

    async def recent(self, limit: int = LIST_LIMIT) -> list[Poll]:
        """The newest listed polls first, at most ``limit``, with their counts."""
        async def job() -> list[Poll]:
            ids = await self._redis.zrevrange(self._listed, 0, limit - 1)
            if not ids:
                return []
            # Polls of several slots: a pipeline, not a transaction (each poll is read
            # whole, as each of its changes is one script).
            async with self._redis.pipeline(transaction=False) as pipe:
                for poll_id in ids:
                    pipe.hgetall(self._key(poll_id)).hgetall(self._key(poll_id, ":votes"))
                replies = await pipe.execute()
            polls = [parse_poll(poll_id, replies[2 * n], replies[2 * n + 1])
                     for n, poll_id in enumerate(ids)]
            for n, poll_id in enumerate(ids):
                if polls[n] is None and await self._adopted(poll_id):
                    found = await self._read(poll_id, None)
                    polls[n] = found[0] if found is not None else None
            return [poll for poll in polls if poll is not None]
        return await self._call(job)

    async def vote(self, poll_id: str, option_id: Choice, voter_id: Optional[str]) -> Tally:
        """Count one ballot (as ``PollStore.vote``) and return the poll's counts with it,
        once Redis has it: ``VOTE`` for one option, ``BALLOT`` for several or for a change
        of vote.

        Raises:
            ClientError: ``no_such_poll``, ``poll_closed``, ``no_such_option``,
                ``no_voter_id``, ``already_voted``, ``too_many_choices`` (as
                ``PollStore.vote``).
            PollsUnavailable: Redis did not take the vote (``unavailable``).
        """
        if not POLL_ID.fullmatch(poll_id):
            raise refused("no_such_poll")
        chosen = choices(option_id)
        if not chosen or len(set(chosen)) < len(chosen):
            raise refused("too_many_choices")
        keys = self._poll_keys(poll_id)
        voter = voter_id or ""
        # One choice, batching on (one Redis): the vote and the flags go in this turn's
        # pipeline, in order, taking no turn of this store (the batcher keeps their order).
        batched = self.batcher.batching and len(chosen) == 1 and not self._cluster

        async def cast(ballot: bool) -> Any:
            deadline = self._deadline()
            if self._cluster:  # answered once a replica has it (``_replicated``)
                if ballot:
                    return await self._replicated(BALLOT, keys, [voter, *chosen, deadline])
                return await self._replicated(VOTE, keys, [chosen[0], voter, deadline])
            if ballot:
                return await self._ballot(keys=keys, args=[voter, *chosen, deadline])
            return await self._vote(keys=keys, args=[chosen[0], voter, deadline])

        async def attempt() -> tuple[Any, list[Optional[str]]]:
            if batched:
                result, flags = await asyncio.gather(
                    self.batcher.call(self._vote, keys, [chosen[0], voter, self._deadline]),
                    self.batcher.call(self._flags, [self._key(poll_id)]))
            else:
                result = await cast(len(chosen) > 1)
                # Whether the counts may be shown and the vote changed, read after the vote.
                flags = await self._flags(keys=[self._key(poll_id)])
            if result == "already_voted" and flags[2] == "1":  # a change of vote
                result = await cast(True)
            return result, flags

        async def job() -> tuple[Any, list[Optional[str]]]:
            outcome = await attempt()
            if outcome[0] == "no_such_poll" and await self._adopted(poll_id):
                outcome = await attempt()
            return outcome
        result, (results, revealed, _) = await self._call(job, batched=batched)
        if result == "late":  # Redis ran it after the caller had given up: not counted
            raise PollsUnavailable()
        if isinstance(result, str):
            raise refused(result if result in VOTE_REFUSALS else "no_such_poll")
        return Tally(poll_id, ordered_counts(result),
                     hidden=results == "hidden" and revealed != "1")

    async def snapshot(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        """The poll with its counts and the option ``voter_id`` chose in it, read in one
        step; None if there is no such poll."""
        if not POLL_ID.fullmatch(poll_id):
            return None
        return await self._call(
            lambda: self._again_if_adopted(poll_id, lambda: self._read(poll_id, voter_id)))

    async def participants(
        self, poll_id: str, viewers_here: int, valid_for: float
    ) -> Optional[tuple[int, int]]:
        """Record that ``viewers_here`` viewers of the poll are connected to this process,
        for ``valid_for`` seconds (unless recorded again), and return ``(voters, viewers)``
        over every process (``PARTICIPANTS``); None if there is no such poll."""
        if not POLL_ID.fullmatch(poll_id):
            return None
        keys = [*self._poll_keys(poll_id), self._key(poll_id, ":viewers")]
        args = [self.process_id, viewers_here, max(1, int(valid_for * 1000))]

        async def job() -> Optional[list[int]]:
            return await self._participants_script(keys=keys, args=args)
        counts = await self._call(lambda: self._again_if_adopted(poll_id, job))
        return None if not counts else (int(counts[0]), int(counts[1]))

    async def aclose(self) -> None:
        """Close the connections; closing twice is harmless."""
        self._closed = True
        await self.batcher.aclose()
        await close(self._redis)

    # The jobs, run by _call.

    async def _replicated(self, script: str, keys: list[str], args: list[str]) -> Any:
        """On a cluster: ``script``'s answer once a replica of its master has its writes.

        A master's writes reach its replicas a moment after it answered, so a master killed
        in that moment takes an acknowledged vote with it when its replica takes over.
        ``WAIT 1`` after the script, on the same connection (WAIT counts that connection's
        writes), holds the answer until one replica has them; none within
        ``REPLICA_WAIT_MS``, the vote is refused (``unavailable``: refused but counted, never
        acknowledged and lost).

        Raises:
            NotReplicated: no replica took the writes in time.
        """
        cluster: Any = self._redis
        if self._stale_map:  # a failed call may mean a failover: ask who serves what
            await cluster.nodes_manager.initialize()
            self._stale_map = False
        node = cluster.get_node_from_key(keys[0])
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(conn.pack_commands([
                ("EVAL", script, len(keys), *keys, *args), ("WAIT", 1, REPLICA_WAIT_MS)]))
            result = await conn.read_response()
            replicas = await conn.read_response()
        except BaseException:
            self._stale_map = True
            await conn.disconnect()  # a reply may still be on its way: never reuse it
            raise
        finally:
            node.release(conn)
        if int(replicas) < 1:
            raise NotReplicated(f"no replica of {node.name} took the vote within "
                                f"{REPLICA_WAIT_MS} ms")
        return result

    async def _again_if_adopted(self, poll_id: str, job: Callable[[], Awaitable[T]]) -> T:
        """``job``'s answer; once more if it found no poll (None, 0, ``no_such_poll``) and
        the poll was just adopted from its keys of before the hash tags."""
        result = await job()
        if result in (None, 0, "no_such_poll") and await self._adopted(poll_id):
            result = await job()
        return result

    async def _read(
        self, poll_id: str, voter_id: Optional[str]
    ) -> Optional[tuple[Poll, Optional[str]]]:
        fields, votes, chosen = await self._read_script(
            keys=self._poll_keys(poll_id), args=[voter_id or ""])
        poll = parse_poll(poll_id, pairs(fields), pairs(votes))
        if poll is None:
            return None
        return poll, chosen if voter_id else None

    async def _insert(self, poll_id: str, new: NewPoll, manage_hash: Optional[str]) -> bool:
        glosses = new.glosses or (None,) * len(new.labels)
        ids = [str(n) for n in range(1, len(new.labels) + 1)]
        options = json.dumps([list(option) for option in zip(ids, new.labels, glosses)],
                             ensure_ascii=False)
        if await self._adopted(poll_id):
            return False  # the id was taken before the upgrade
        code = await self._claim_code(poll_id)
        created = await self._create_script(
            keys=[self._key(poll_id), self._key(poll_id, ":votes")],
            args=[poll_id, new.title, int(new.one_vote_per_voter), int(new.listed),
                  repr(time.time()), options, manage_hash or "", code, new.results,
                  int(new.allow_change), new.max_choices, *ids])
        if not created:  # the id is taken: the code goes back
            await self._redis.delete(self._code_key(code))
        elif new.listed:
            # Listed once it exists: ``polls:seq`` and ``polls:listed`` are slots apart
            # from the poll's (and may be from each other's) on a cluster.
            seq = await self._redis.incr(f"{self.prefix}polls:seq")
            await self._redis.zadd(self._listed, {poll_id: seq})
        return bool(created)

    async def _claim_code(self, poll_id: str) -> str:
        """A fresh join code, now pointing at ``poll_id``."""
        for _ in range(20):
            code = new_join_code()
            if await self._redis.set(self._code_key(code), poll_id, nx=True):
                return code
        raise RuntimeError("could not find a free join code")

    def _deadline(self) -> int:
        """The Redis milliseconds past which a vote sent now is not counted: half the call's
        timeout from now, so Redis either counts it while its voter still waits for the
        answer, or not at all (a vote queued behind a frozen Redis)."""
        return int(time.time() * 1000 + self._offset_ms + self.timeout * 500)

    async def _sync_clock(self) -> None:
        """Measure how far Redis's clock is from this process's (the votes' deadlines)."""
        before = time.time()
        seconds, micros = await self._redis.time()
        after = time.time()
        self._offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500

    async def _ensure_demo(self) -> None:
        """Measure Redis's clock and create the demo poll if it is not known to exist
        (before the first call, and after an outage)."""
        if self._demo_ready:
            return
        if not self._cluster:  # a cluster's nodes each have their clock: NTP keeps them close
            await self._sync_clock()
        if await self._insert(DEMO_ID, DEMO, None):
            log.info("demo poll created in Redis at %s", self.url)
        self._demo_ready = True
