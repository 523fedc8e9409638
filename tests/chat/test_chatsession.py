"""``realtime.chat.session.ChatSession`` without a server: events in (open, join, say,
whisper, close), frames out (what the session sends its connection, what the hub writes to
each subscriber), on the embedded chat state and a real hub."""

from typing import Any, Optional

import pytest

from realtime.chat.rules import Rooms
from realtime.chat.session import ChatSession
from realtime.chat.state import EmbeddedChatState, room_topic
from realtime.limits.ratelimit import KeyedLimiter
from realtime.pubsub.hub import Hub
from realtime.wire.messages import ClientError
from tests.support import RecordingConnection


class Connection(RecordingConnection):
    """A recording connection with its chat session, whose errors it keeps too."""

    def __init__(self, hub: Hub, chat: EmbeddedChatState, **session: Any) -> None:
        super().__init__(hub)
        self.errors: list[tuple[str, str]] = []
        self.session = ChatSession(chat, hub, self, self.frames.append,
                                   lambda code, message: self.errors.append((code, message)),
                                   **session)


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def chat(hub: Hub) -> EmbeddedChatState:
    return EmbeddedChatState(Rooms(), hub)


async def test_open_sends_the_welcome_first(hub, chat):
    """A session opened sends its connection one welcome, naming the room and nobody."""
    alice = Connection(hub, chat)
    welcome = await alice.session.open("lobby", None)
    assert alice.frames == [welcome]
    assert (welcome["type"], welcome["room"], welcome["nick"]) == ("welcome", "lobby", None)


async def test_open_with_a_nickname_announces_it(hub, chat):
    """A session opened under a free nickname is welcomed under it; the room hears it
    joined."""
    watcher = Connection(hub, chat)
    await watcher.session.open("lobby", None)
    alice = Connection(hub, chat)
    welcome = await alice.session.open("lobby", "a" * 32, "alice")
    assert welcome["nick"] == "alice" and welcome["online"] == ["alice"]
    assert watcher.frames[-1] == {"type": "joined", "room": "lobby", "nick": "alice"}


async def test_a_taken_nickname_is_an_error_after_the_welcome(hub, chat):
    """A nickname another holder has is refused after the welcome; the session stays,
    anonymous."""
    await Connection(hub, chat).session.open("lobby", "a" * 32, "alice")
    bob = Connection(hub, chat)
    welcome = await bob.session.open("lobby", "b" * 32, "alice")
    assert welcome["nick"] is None
    assert [code for code, _ in bob.errors] == ["nick_taken"]


async def test_history_follows_since(hub, chat):
    """A session opened with ``since`` gets the messages after it, recovered."""
    sender = Connection(hub, chat)
    await sender.session.open("lobby", None)
    first = await sender.session.say("one")
    await sender.session.say("two")
    late = Connection(hub, chat)
    welcome = await late.session.open("lobby", None, since=first["id"])
    assert [m["text"] for m in welcome["history"]] == ["two"]
    assert welcome["recovered"] is True


async def test_frames_published_while_the_welcome_is_built_follow_it(hub, chat):
    """What the room publishes while a welcome is being built reaches the connection after
    the welcome, once, and not before it."""
    sender = Connection(hub, chat)
    await sender.session.open("lobby", None)
    late = Connection(hub, chat)
    replay = chat.replay

    async def replay_after_a_message(room: str, connection: str, since: Optional[int]) -> Any:
        await sender.session.say("meanwhile")  # published after the subscribe
        return await replay(room, connection, since)

    chat.replay = replay_after_a_message  # type: ignore[method-assign]
    welcome = await late.session.open("lobby", None)
    assert late.frames[0] is welcome
    assert [m["text"] for m in welcome["history"]] == ["meanwhile"]
    assert late.kinds() == ["welcome"]  # in the history: not again live


async def test_a_held_frame_the_history_lacks_is_written_after_the_welcome(hub, chat):
    """A frame held during the welcome that its history does not hold is written after it."""
    late = Connection(hub, chat)
    replay = chat.replay

    async def replay_then_presence(room: str, connection: str, since: Optional[int]) -> Any:
        result = await replay(room, connection, since)
        hub.publish(room_topic(room), {"type": "joined", "room": room, "nick": "carol"})
        return result

    chat.replay = replay_then_presence  # type: ignore[method-assign]
    await late.session.open("lobby", None)
    assert late.kinds() == ["welcome", "joined"]


async def test_say_reaches_every_session_of_the_room(hub, chat):
    """A public message reaches every connection of the room, the sender's too."""
    one, two = Connection(hub, chat), Connection(hub, chat)
    await one.session.open("lobby", None)
    await two.session.open("lobby", None)
    await one.session.say("hello")
    for each in (one, two):
        assert each.frames[-1]["text"] == "hello"


async def test_whisper_reaches_its_two_parties_only(hub, chat):
    """A private message reaches its recipient and its sender, nobody else."""
    alice, bob, carol = (Connection(hub, chat) for _ in range(3))
    await alice.session.open("lobby", "a" * 32, "alice")
    await bob.session.open("lobby", "b" * 32, "bob")
    await carol.session.open("lobby", "c" * 32, "carol")
    await alice.session.whisper("bob", "psst")
    assert alice.frames[-1]["type"] == bob.frames[-1]["type"] == "private"
    assert "private" not in carol.kinds()


async def test_renaming_is_one_renamed_frame(hub, chat):
    """A member taking another nickname is one ``renamed`` for the room."""
    watcher, alice = Connection(hub, chat), Connection(hub, chat)
    await watcher.session.open("lobby", None)
    await alice.session.open("lobby", "a" * 32, "alice")
    await alice.session.join("ann")
    assert watcher.frames[-1] == {"type": "renamed", "room": "lobby", "from": "alice",
                                  "to": "ann"}


async def test_the_same_nickname_again_is_told_to_its_connection_alone(hub, chat):
    """A second connection of the same holder and nickname gets ``joined`` alone; the room
    hears nothing."""
    watcher = Connection(hub, chat)
    await watcher.session.open("lobby", None)
    await Connection(hub, chat).session.open("lobby", "a" * 32, "alice")
    heard = len(watcher.frames)
    second = Connection(hub, chat)
    await second.session.open("lobby", "a" * 32, "alice")
    assert second.kinds() == ["welcome", "joined"]
    assert watcher.kinds()[heard:] == []


async def test_close_announces_the_nickname_left(hub, chat):
    """Closing the last connection of a nickname tells the room it left."""
    watcher, alice = Connection(hub, chat), Connection(hub, chat)
    await watcher.session.open("lobby", None)
    await alice.session.open("lobby", "a" * 32, "alice")
    await alice.session.close()
    assert watcher.frames[-1] == {"type": "left", "room": "lobby", "nick": "alice"}
    assert hub.topics(alice) == set()


async def test_closing_twice_is_closing_once(hub, chat):
    """A second close publishes nothing more."""
    watcher, alice = Connection(hub, chat), Connection(hub, chat)
    await watcher.session.open("lobby", None)
    await alice.session.open("lobby", "a" * 32, "alice")
    await alice.session.close()
    heard = len(watcher.frames)
    await alice.session.close()
    assert len(watcher.frames) == heard


async def test_an_over_budget_message_changes_nothing(hub, chat):
    """A message over the room's budget is refused with ``rate_limited`` and nobody
    receives it."""
    budget = KeyedLimiter(rate=0.001, burst=1)
    one = Connection(hub, chat, room_rate=budget)
    await one.session.open("lobby", None)
    await one.session.say("first")
    with pytest.raises(ClientError) as refused:
        await one.session.say("second")
    assert refused.value.code == "rate_limited"
    assert [frame.get("text") for frame in one.frames[1:]] == ["first"]


async def test_a_session_that_failed_to_open_holds_nothing(hub, chat):
    """A welcome that fails (its state raises) leaves the hub holding no frames for the
    connection."""
    broken = Connection(hub, chat)

    async def fails(*_: Any) -> Any:
        raise RuntimeError("the state failed")

    chat.replay = fails  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await broken.session.open("lobby", None)
    assert hub.release(broken) == []
    hub.publish(room_topic("lobby"), {"type": "message", "id": 1, "text": "after"})
    assert broken.frames[-1]["text"] == "after"
