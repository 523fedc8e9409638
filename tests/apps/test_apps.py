"""``realtime.apps.session.AppSession`` and the counter app without a server: messages in, frames
out (what the session sends its connection, what the hub writes to each subscriber), on
the embedded app state and a real hub."""

import asyncio

import pytest

from realtime.apps.counter import CounterSession
from realtime.apps.session import AppSession
from realtime.apps.state import EmbeddedAppState
from realtime.pubsub.hub import Hub
from realtime.wire.messages import ClientError, Message
from tests.support import RecordingConnection


class Connection(RecordingConnection):
    """A recording connection with its app session."""

    def __init__(self, hub: Hub, state: EmbeddedAppState, session_class: type = CounterSession,
                 args: tuple[str, ...] = ("demo",)) -> None:
        super().__init__(hub)
        self.session = session_class(hub, state, self, self.frames.append, args)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def state() -> EmbeddedAppState:
    return EmbeddedAppState()


def post(hub: Hub, state: EmbeddedAppState, name: str = "demo") -> CounterSession:
    """A session as a POST has it: no connection, never opened."""
    return CounterSession(hub, state, args=(name,))


async def test_open_sends_the_count_as_welcome(hub, state):
    """A counter's connection is welcomed with its name and value, 0 for a new one."""
    alice = Connection(hub, state)
    await alice.session.open("demo")
    assert alice.frames == [{"type": "count", "name": "demo", "value": 0}]


async def test_increment_reaches_every_connection_of_the_counter(hub, state):
    """An increment is published to every connection of that counter, and no other."""
    alice, bob, other = Connection(hub, state), Connection(hub, state), Connection(
        hub, state, args=("other",))
    for each in (alice, bob, other):
        await each.session.open(*each.session.args)
    await alice.session.receive({"type": "increment", "by": 3})
    assert alice.frames[-1] == bob.frames[-1] == {"type": "count", "name": "demo", "value": 3}
    assert other.frames == [{"type": "count", "name": "other", "value": 0}]


async def test_increment_defaults_to_one_and_answers_the_frame(hub, state):
    """An increment without ``by`` adds one, and returns the frame it published."""
    answer = await post(hub, state).receive({"type": "increment"})
    assert answer == {"type": "count", "name": "demo", "value": 1}


@pytest.mark.parametrize("by", [0, 101, -1, 1.5, "2", True, None])
async def test_increment_out_of_bounds_is_bad_message(hub, state, by):
    """``by`` that is not an integer from 1 to 100 is refused, and nothing changes."""
    with pytest.raises(ClientError) as refused:
        await post(hub, state).receive({"type": "increment", "by": by})
    assert refused.value.code == "bad_message"
    assert await state.get("counter:demo") is None


async def test_unknown_type_is_refused(hub, state):
    """A message type the app has no handler for is ``unknown_type``."""
    with pytest.raises(ClientError) as refused:
        await post(hub, state).receive({"type": "decrement"})
    assert refused.value.code == "unknown_type"


async def test_the_state_is_the_apps_own(hub, state):
    """A session's state keys are under its app's name."""
    await post(hub, state).receive({"type": "increment", "by": 2})
    assert await state.get("counter:demo") == "2"


async def test_a_post_session_cannot_subscribe(hub, state):
    """A session without a connection refuses to subscribe, loudly."""
    with pytest.raises(RuntimeError):
        post(hub, state).subscribe("counter.demo")


class Slow(CounterSession):
    """A counter whose welcome, once subscribed, waits until the test lets it read."""

    name = "counter"
    reading: "asyncio.Event"
    gate: "asyncio.Event"

    async def count(self) -> Message:
        self.reading.set()
        await self.gate.wait()
        return await super().count()


async def test_a_change_during_the_welcome_follows_it_once(hub, state):
    """A change published while the welcome is built follows the welcome, unless the
    welcome counts it already."""
    Slow.reading, Slow.gate = asyncio.Event(), asyncio.Event()
    late = Connection(hub, state, Slow)
    opening = asyncio.ensure_future(late.session.open("demo"))
    await Slow.reading.wait()  # subscribed, about to read
    await post(hub, state).receive({"type": "increment", "by": 1})  # counted in the welcome
    Slow.gate.set()
    await opening
    assert [frame["value"] for frame in late.frames] == [1]


async def test_a_held_change_the_welcome_lacks_is_sent_after_it(hub, state):
    """A change held during the welcome that is newer than the welcome's value follows."""

    class Stale(CounterSession):
        name = "counter"

        async def count(self) -> Message:
            frame = await super().count()
            # Published after the read: the welcome cannot count it.
            await post(hub, state).receive({"type": "increment", "by": 5})
            return frame

    late = Connection(hub, state, Stale)
    await late.session.open("demo")
    assert [frame["value"] for frame in late.frames] == [0, 5]


class Counting(AppSession):
    """An app that records its hooks."""

    name = "counting"
    calls: list[str]

    async def opened(self, *args: str) -> None:
        self.calls.append("opened")
        await asyncio.sleep(0)
        self.subscribe(self.topic("room"))

    def closed(self) -> None:
        self.calls.append("closed")


async def test_closed_runs_once_after_opened(hub, state):
    """``closed`` runs once, and only for a session that opened."""
    never = Connection(hub, state, Counting)
    never.session.calls = []
    await never.session.close()
    assert never.session.calls == []
    conn = Connection(hub, state, Counting)
    conn.session.calls = []
    await conn.session.open()
    await conn.session.close()
    await conn.session.close()
    assert conn.session.calls == ["opened", "closed"]


async def test_a_connection_gone_while_opening_is_closed_and_unsubscribed(hub, state):
    """A connection that ends while ``opened`` runs gets ``closed`` once it returns, and
    keeps no subscription."""
    conn = Connection(hub, state, Counting)
    conn.session.calls = []
    opening = asyncio.ensure_future(conn.session.open())
    await asyncio.sleep(0)
    await conn.session.close()  # the transport saw the client leave
    await opening
    assert conn.session.calls == ["opened", "closed"]
    assert not hub.subscriber_count("counting.room")


def test_an_app_needs_a_name(hub, state):
    """A session class without a name cannot be used: its routes and keys need one."""

    class Nameless(AppSession):
        pass

    with pytest.raises(TypeError):
        Nameless(hub, state)
