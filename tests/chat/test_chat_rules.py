"""Chat rules without a server: nicknames, text, ids, history and replay."""

import tracemalloc
import unicodedata

import pytest

from realtime.chat import nickprofile
from realtime.chat.rules import Room, Rooms, check_text, nick_key, normalize_nick
from realtime.wire.messages import ClientError, encode


def code_of(call, *args):
    with pytest.raises(ClientError) as raised:
        call(*args)
    return raised.value.code


def test_nick_is_trimmed_and_nfkc_normalised():
    """Spaces around a nickname go, and compatibility forms fold (full-width to ASCII)."""
    assert normalize_nick("  ａｌｉｃｅ\u3000") == "alice"


def test_nick_keeps_its_case():
    """The stored form keeps the case the user typed."""
    assert normalize_nick("Alice") == "Alice"


@pytest.mark.parametrize("nick", ["", "   ", "a" * 33, "a\u200bb", "a\u202eb", "\ue000x", "a\x00b",
                                  "a\nb", "a\udcffb", 42, None])
def test_bad_nicknames_are_refused(nick):
    """Empty, too long, control, format, private-use, surrogate or non-string: bad_nick."""
    assert code_of(normalize_nick, nick) == "bad_nick"


def test_nick_of_32_code_points_is_accepted():
    """The longest nickname allowed is 32 code points, counted after normalisation."""
    assert normalize_nick("é" * 32) == "é" * 32


def test_nick_keys_compare_case_and_compatibility_insensitively():
    """Alice, alice, ALICE and full-width ａｌｉｃｅ are one nickname."""
    keys = {nick_key(normalize_nick(n)) for n in ["Alice", "alice", "ALICE", "ａｌｉｃｅ"]}
    assert len(keys) == 1


@pytest.mark.parametrize("nick", ["\u0430lice", "alic\u0435", "Tanaka\u7530\u4e2d",
                                  "p\u0430yp\u0430l"])
def test_mixed_script_nicknames_are_refused(nick):
    """A nickname mixing scripts (Latin with a Cyrillic а or е, Latin with Han) is bad_nick."""
    with pytest.raises(ClientError) as raised:
        normalize_nick(nick)
    assert raised.value.code == "bad_nick" and "one script" in raised.value.message


@pytest.mark.parametrize("nick", ["a\u2028b", "a\u2029b", "a\u202eb", "a\u202db", "a\u2066b",
                                  "a\u2069b", "a\u200fb", "a\u061cb"])
def test_separators_and_bidi_controls_in_nicknames_are_refused(nick):
    """The line and paragraph separators and every bidi control are bad_nick."""
    assert code_of(normalize_nick, nick) == "bad_nick"


@pytest.mark.parametrize("nick", ["<script>", "alice\u2665", "bob\U0001f600", "a:b", "a[b]",
                                  "1\u0663", "e\u0301\u0301"])
def test_nicknames_outside_the_identifier_profile_are_refused(nick):
    """Symbols, emoji, brackets, colons, mixed digit systems, a doubled mark: bad_nick."""
    assert code_of(normalize_nick, nick) == "bad_nick"


@pytest.mark.parametrize("nick", ["alice smith", "jean-luc", "o'brien", "j.r.", "Zo\u00eb",
                                  "\u7530\u4e2d\u3055\u3093", "\u0430\u043d\u044f", "r2d2",
                                  "\u0391\u03b8\u03b7\u03bd\u03ac", "snake_case"])
def test_single_script_nicknames_are_accepted(nick):
    """Names of one script (Japanese counts as one), with spaces, - . ' _ and digits, pass."""
    assert normalize_nick(nick) == nick


@pytest.mark.parametrize("first, second", [
    ("ace", "\u0430\u0441\u0435"),  # all-Cyrillic асе
    ("alice", "AL\u0130CE"),  # Turkish capital dotted I
    ("modern", "rnodern"),
    ("bob smith", "bob  smith"),
    ("Zo\u00eb", "zoe\u0308"),
])
def test_look_alike_nicknames_have_one_key(first, second):
    """Nicknames whose confusable skeletons match, after case folding, are one nickname."""
    assert nick_key(normalize_nick(first)) == nick_key(normalize_nick(second))


def test_different_nicknames_keep_different_keys():
    """Look-alike folding does not merge nicknames that read differently."""
    keys = {nick_key(normalize_nick(nick)) for nick in ["alice", "alicia", "bob", "zoe", "zoë"]}
    assert len(keys) == 5


def test_look_alike_nickname_is_taken_in_a_room():
    """A room refuses with nick_taken a nickname that looks like one held."""
    room = Room("lobby")
    room.join("a", "ace")
    assert code_of(room.join, "b", "\u0430\u0441\u0435") == "nick_taken"


@pytest.mark.parametrize("text, code", [("", "bad_message"), ("  \n", "bad_message"),
                                        (7, "bad_message"), (None, "bad_message"),
                                        ("x" * 4001, "too_long")])
def test_bad_text_is_refused(text, code):
    """Empty, blank or non-string text is bad_message; over 4,000 code points too_long."""
    assert code_of(check_text, text) == code


def test_text_of_4000_code_points_is_accepted():
    """4,000 code points (not bytes) is the longest message."""
    assert check_text("語" * 4000) == "語" * 4000


def test_ids_increase_across_public_and_private_messages():
    """Public and private messages take ids from one increasing sequence."""
    room = Room("lobby")
    alice, bob = object(), object()
    room.enter(alice, None)
    room.enter(bob, None)
    room.join(alice, "alice")
    room.join(bob, "bob")
    ids = [room.say(alice, "1")["id"], room.whisper(alice, "bob", "2")[0]["id"],
           room.say(bob, "3")["id"]]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_a_room_after_restart_never_reuses_ids():
    """A room created later (a restart) starts above every id handed out before."""
    clock = [1_000.0]
    before = Room("lobby", clock=lambda: clock[0])
    speaker = object()
    before.enter(speaker, None)
    last = [before.say(speaker, "x")["id"] for _ in range(5000)][-1]
    clock[0] += 1.0
    after = Room("lobby", clock=lambda: clock[0])
    after.enter(speaker, None)
    assert after.say(speaker, "y")["id"] > last


def test_history_without_since_is_the_newest_visible_messages():
    """A newcomer sees the newest messages up to the history size, oldest first."""
    room = Room("lobby", history=3)
    speaker = object()
    room.enter(speaker, None)
    for n in range(10):
        room.say(speaker, str(n))
    history, recovered = room.history(speaker)
    assert [m["text"] for m in history] == ["7", "8", "9"] and recovered is None


def test_replay_recovers_everything_after_since_while_held():
    """A reconnect with since gets every later message and recovered true."""
    room = Room("lobby", history=3, replay=100)
    speaker = object()
    room.enter(speaker, None)
    frames = [room.say(speaker, str(n)) for n in range(10)]
    history, recovered = room.history(speaker, since=frames[2]["id"])
    assert [m["text"] for m in history] == [str(n) for n in range(3, 10)] and recovered is True


def test_replay_of_evicted_messages_says_not_recovered():
    """When the room no longer holds what came after since: recovered false, newest shown."""
    room = Room("lobby", history=2, replay=5)
    speaker = object()
    room.enter(speaker, None)
    frames = [room.say(speaker, str(n)) for n in range(10)]
    history, recovered = room.history(speaker, since=frames[1]["id"])
    assert recovered is False and [m["text"] for m in history] == ["8", "9"]


def test_replay_of_an_up_to_date_client_is_empty_and_recovered():
    """A client that saw the last message gets no history and recovered true."""
    room = Room("lobby")
    speaker = object()
    room.enter(speaker, None)
    last = room.say(speaker, "x")
    assert room.history(speaker, since=last["id"]) == ([], True)


def test_private_history_is_only_for_its_two_parties():
    """A third nickname never sees a private message in history."""
    room = Room("lobby")
    alice, bob, carol = object(), object(), object()
    for conn, nick in [(alice, "alice"), (bob, "bob"), (carol, "carol")]:
        room.enter(conn, None)
        room.join(conn, nick)
    room.whisper(alice, "bob", "secret")
    assert [m["text"] for m in room.history(bob)[0]] == ["secret"]
    assert [m["text"] for m in room.history(alice)[0]] == ["secret"]
    assert room.history(carol)[0] == []


def test_private_history_does_not_pass_to_another_browser_taking_the_nick():
    """Once bob's browser leaves, another browser taking the nick bob sees none of his privates."""
    room = Room("lobby")
    alice, bob, impostor = object(), object(), object()
    room.enter(alice, "cookie-alice")
    room.enter(bob, "cookie-bob")
    room.join(alice, "alice")
    room.join(bob, "bob")
    room.whisper(alice, "bob", "secret")
    room.close(bob)
    room.enter(impostor, "cookie-other")
    room.join(impostor, "bob")
    assert room.history(impostor)[0] == []


def test_same_cookie_shares_a_nick_and_leaves_with_the_last_connection():
    """Two tabs of one browser hold one nickname; it leaves when the second tab closes."""
    room = Room("lobby")
    tab1, tab2 = object(), object()
    room.enter(tab1, "cookie-a")
    room.enter(tab2, "cookie-a")
    assert room.join(tab1, "alice").gained is True
    assert room.join(tab2, "alice").gained is False
    assert room.close(tab1) is None
    assert room.close(tab2) == "alice"


def test_rooms_forget_idle_empty_rooms_past_the_limit():
    """Past max_rooms, empty rooms are forgotten so memory stays bounded."""
    rooms = Rooms(max_rooms=10)
    for n in range(100):
        rooms.get(f"room{n}")
    assert len(rooms) <= 10


# About 24 KB as a JSON frame: every control character is escaped to six bytes.
HEAVY = "\x01" * 4000


def frame_bytes(frames):
    """Bytes the frames take inside a welcome's history list."""
    return sum(len(encode(frame)) + 1 for frame in frames)


def speaker_in(room, cookie=None):
    """A new connection entered in ``room``."""
    connection = object()
    room.enter(connection, cookie)
    return connection


def test_room_keeps_at_most_its_history_bytes():
    """A room keeps only the newest messages that fit its byte bound, whatever their count."""
    room = Room("lobby", replay=1000, history_bytes=100_000)
    speaker = speaker_in(room)
    for _ in range(50):
        room.say(speaker, HEAVY)
    assert 75_000 < room.history_bytes <= 100_000


def test_welcome_history_fits_the_welcome_bytes():
    """A newcomer's history is the newest messages that fit in welcome_bytes."""
    room = Room("lobby", history=50, welcome_bytes=60_000)
    speaker = speaker_in(room)
    last = [room.say(speaker, HEAVY) for _ in range(10)][-1]
    history, _ = room.history(speaker_in(room))
    assert history[-1] == last and len(history) == 2 and frame_bytes(history) <= 60_000


def test_replay_cut_by_the_welcome_bytes_is_not_recovered():
    """When everything after since is held but too big for a welcome: newest, recovered false."""
    room = Room("lobby", history=50, welcome_bytes=60_000)
    speaker = speaker_in(room)
    since = room.say(speaker, "seen")["id"]
    for _ in range(5):
        room.say(speaker, HEAVY)
    history, recovered = room.history(speaker_in(room), since)
    assert recovered is False and len(history) == 2


def test_replay_after_a_message_too_big_to_keep_is_not_recovered():
    """A message larger than the room's bound is never held, so a since before it is not
    recovered even though older messages are held."""
    room = Room("lobby", history_bytes=10_000)
    speaker = speaker_in(room)
    since = room.say(speaker, "seen")["id"]
    room.say(speaker, HEAVY)
    room.say(speaker, "after")
    history, recovered = room.history(speaker_in(room), since)
    assert recovered is False and [m["text"] for m in history] == ["seen", "after"]


def test_replay_counts_only_what_the_connection_may_see():
    """A replay holding every message after since that the connection may see is recovered."""
    room = Room("lobby")
    alice, bob, carol = speaker_in(room), speaker_in(room), speaker_in(room)
    for conn, nick in [(alice, "alice"), (bob, "bob"), (carol, "carol")]:
        room.join(conn, nick)
    since = room.say(alice, "seen")["id"]
    room.whisper(alice, "bob", "secret")
    room.say(alice, "public")
    history, recovered = room.history(carol, since)
    assert recovered is True and [m["text"] for m in history] == ["public"]


def test_rooms_share_one_byte_budget_oldest_first():
    """Across rooms, past history_bytes the oldest messages of any room go first."""
    rooms = Rooms(room_history_bytes=10**6, history_bytes=120_000)
    quiet, busy = rooms.get("quiet"), rooms.get("busy")
    first = quiet.say(speaker_in(quiet), "first")
    writer = speaker_in(busy)
    for _ in range(10):
        busy.say(writer, HEAVY)
    assert rooms.budget.bytes <= 120_000
    assert first not in quiet.history(speaker_in(quiet))[0]
    assert len(busy.history(speaker_in(busy))[0]) == 4


def test_the_budget_counts_a_text_by_its_memory_when_that_is_larger():
    """4,000 letters and an emoji (4 KB as JSON, 20 KB in CPython) count 20 KB: a 50,000-byte
    budget keeps two such messages, not ten."""
    rooms = Rooms(room_history_bytes=10**6, history_bytes=50_000)
    room = rooms.get("lobby")
    writer = speaker_in(room)
    for n in range(8):
        room.say(writer, f"{n}" + "x" * 3998 + "\N{GRINNING FACE}")
    assert len(room.history(writer)[0]) == 2
    assert rooms.budget.bytes <= 50_000


def test_empty_room_without_messages_is_forgotten_when_its_last_connection_closes():
    """A room nobody is in and with no history goes at once."""
    rooms = Rooms()
    room = rooms.get("lobby")
    connection = speaker_in(room)
    room.close(connection)
    assert "lobby" not in rooms and len(rooms) == 0


def test_empty_room_is_forgotten_once_the_budget_takes_its_history():
    """An empty room whose last message the shared budget dropped is forgotten."""
    rooms = Rooms(room_history_bytes=10**6, history_bytes=120_000)
    old = rooms.get("old")
    visitor = speaker_in(old)
    old.say(visitor, HEAVY)
    old.close(visitor)
    assert "old" in rooms  # its history is still worth replaying
    busy = rooms.get("busy")
    writer = speaker_in(busy)
    for _ in range(10):
        busy.say(writer, HEAVY)
    assert "old" not in rooms and rooms.budget.bytes <= 120_000


def test_room_created_again_never_reuses_the_ids_of_the_forgotten_one():
    """A room forgotten and created again starts above every id the first one handed out,
    even when the clock has not moved."""
    rooms = Rooms(clock=lambda: 1_000.0)
    room = rooms.get("lobby")
    connection = speaker_in(room)
    last = [room.say(connection, "x")["id"] for _ in range(10)][-1]
    room.forget_history()
    room.close(connection)
    again = rooms.get("lobby")
    assert again is not room and again.next_id > last


def test_a_new_room_when_every_room_is_in_use_is_still_given():
    """With max_rooms rooms all in use, a new room is created anyway (none can go)."""
    rooms = Rooms(max_rooms=1)
    speaker_in(rooms.get("a"))
    assert rooms.get("b").name == "b" and len(rooms) == 2


def test_private_history_of_a_cookieless_nick_is_for_that_connection_only():
    """A cookie-less alice's private message is replayed to her connection, and to nobody
    who takes the nickname after her."""
    room = Room("lobby")
    alice, bob = speaker_in(room), speaker_in(room)
    room.join(alice, "alice")
    room.join(bob, "bob")
    room.whisper(bob, "alice", "secret")
    assert [m["text"] for m in room.history(alice)[0]] == ["secret"]
    room.close(alice)
    eve = speaker_in(room)
    room.join(eve, "alice")
    assert room.history(eve)[0] == []


def test_a_cookie_cannot_pass_for_a_cookieless_connection():
    """A browser whose cookie looks like a connection's serial does not hold its nickname."""
    room = Room("lobby")
    alice, bob = speaker_in(room), speaker_in(room)
    room.join(alice, "alice")
    room.join(bob, "bob")
    room.whisper(bob, "alice", "secret")
    room.close(alice)
    eve = speaker_in(room, cookie="1")
    room.join(eve, "alice")
    assert room.history(eve)[0] == []


def test_history_memory_stays_within_the_budget():
    """Ten rooms written full of 4,000-emoji messages hold about the budget in memory, not
    what was written (the review's 193 MiB)."""
    rooms = Rooms(history_bytes=2 * 1024 * 1024)
    tracemalloc.start()
    try:
        for n in range(10):
            room = rooms.get(f"room{n}")
            writer = speaker_in(room)
            for _ in range(100):  # 1.6 MB a room
                room.say(writer, "🙂" * 4000)
            room.close(writer)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rooms.budget.bytes <= 2 * 1024 * 1024
    assert held < 3 * 1024 * 1024


def test_unname_leaves_every_connection_of_the_nickname_in_the_room_anonymous():
    """A nickname taken from a member (fencing) leaves all its connections in the room,
    anonymous readers, and the nickname free there."""
    room = Room("r")
    for connection in ("c1", "c2", "c3"):
        room.enter(connection, "cookie-a" if connection != "c3" else "cookie-b")
    room.join("c1", "Alice")
    room.join("c2", "alice")
    room.join("c3", "bob")
    nick, connections = room.unname(nick_key("ALICE"))
    assert (nick, sorted(connections)) == ("Alice", ["c1", "c2"])
    assert (room.nick("c1"), room.nick("c2"), room.online(), room.readers()) == (
        None, None, ["bob"], 2)
    assert room.unname(nick_key("alice")) is None


def test_every_key_is_plain_text():
    """The key of any character a nickname may hold is text with no control, format or
    separator character but space, so it is safe in a Redis key's name and a topic."""
    allowed = nickprofile.ALLOWED
    for char in (str(item) for item in allowed):
        try:
            nick = normalize_nick(char)
        except ClientError:  # assigned after Python's Unicode version, or space alone
            continue
        for cat in map(unicodedata.category, nick_key(nick)):
            assert cat[0] != "C" and (cat[0] != "Z" or cat == "Zs"), hex(ord(char))
    assert " " not in nick_key("a") and nick_key("a b") == "a b"
