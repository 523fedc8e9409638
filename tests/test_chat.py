"""The chat endpoint over real WebSockets: the contract of /ws/chat/<room>."""

import json
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError

from realtime.chat import rules
from realtime.pubsub.hub import Hub
from server import Config, make_app
from tests.conftest import backend_settings
from tests.support import receive, receive_type, send_json
from tests.support import receive_json as receive_any


@pytest.fixture(params=["embedded", "redis"])
def backend(request):
    """Every test here runs against the embedded chat state and against Redis."""
    return request.param


@pytest.fixture
def config(backend, hub, tmp_path, request):
    """The embedded default, or ``--redis-url`` on the session's real redis-server under a
    key prefix of the test's own."""
    if backend == "embedded":
        return Config(hub=hub, data_dir=str(tmp_path / "data"))
    return Config(data_dir=str(tmp_path / "data"), **backend_settings(backend, request))


@pytest.fixture
def app(running_app):
    """The application, its stores and broker started (conftest's ``running_app``)."""
    return running_app


async def receive_json(conn):
    """The next frame other than ``readers`` (those come whenever anonymous counts change)."""
    while True:
        frame = await receive_any(conn)
        if frame.get("type") != "readers":
            return frame


async def join_room(ws_connect, room="lobby", nick=None, since=None, cookie=None):
    """Connect to a room; return the connection and its welcome frame."""
    query = []
    if nick is not None:
        query.append("nick=" + quote(nick))
    if since is not None:
        query.append(f"since={since}")
    path = f"/ws/chat/{room}" + ("?" + "&".join(query) if query else "")
    headers = {"Cookie": f"chat_id={cookie}"} if cookie else None
    conn = await ws_connect(path, headers)
    welcome = await receive_json(conn)
    assert welcome["type"] == "welcome"
    return conn, welcome


async def say(conn, text, **extra):
    await send_json(conn, {"type": "message", "text": text, **extra})


async def test_welcome_describes_the_room(ws_connect):
    """The first frame is a welcome with room, nick, online list and history."""
    _, welcome = await join_room(ws_connect, room="team-1")
    assert welcome == {"type": "welcome", "room": "team-1", "nick": None, "online": [],
                       "readers": 1, "history": []}


async def test_anonymous_clients_chat(ws_connect):
    """Two anonymous clients see each other's messages, from null, with id and time."""
    a, _ = await join_room(ws_connect)
    b, _ = await join_room(ws_connect)
    await say(a, "hello")
    for conn in (a, b):
        frame = await receive_json(conn)
        assert frame["type"] == "message" and frame["from"] is None
        assert frame["room"] == "lobby" and frame["text"] == "hello"
        assert isinstance(frame["id"], int) and isinstance(frame["ts"], int)


async def test_rooms_are_separate(ws_connect):
    """A message in one room does not reach another room."""
    a, _ = await join_room(ws_connect, room="one")
    b, _ = await join_room(ws_connect, room="two")
    await say(a, "only for one")
    await say(b, "only for two")
    assert (await receive_json(b))["text"] == "only for two"


@pytest.mark.parametrize("room", ["bad%20room", "a" * 65, "dots.here", "%C3%A9t%C3%A9"])
async def test_invalid_room_name_is_refused_at_handshake(ws_connect, room):
    """A room name outside [A-Za-z0-9_-]{1,64} is a 404 at the handshake."""
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(f"/ws/chat/{room}")
    assert refused.value.code == 404


async def test_room_name_of_64_characters_is_accepted(ws_connect):
    """The longest room name, 64 characters, opens."""
    _, welcome = await join_room(ws_connect, room="r" * 64)
    assert welcome["room"] == "r" * 64


async def test_nick_at_connect_is_a_join(ws_connect):
    """?nick= puts the nick in the welcome and its online list, and the room gets joined."""
    watcher, _ = await join_room(ws_connect)
    alice, welcome = await join_room(ws_connect, nick="alice")
    assert welcome["nick"] == "alice" and welcome["online"] == ["alice"]
    assert await receive_json(alice) == {"type": "joined", "room": "lobby", "nick": "alice"}
    assert await receive_json(watcher) == {"type": "joined", "room": "lobby", "nick": "alice"}


async def test_join_message_gives_a_nick(ws_connect):
    """{"type": "join"} gives the sender a nick; everyone, sender included, gets joined."""
    watcher, _ = await join_room(ws_connect)
    bob, _ = await join_room(ws_connect)
    await send_json(bob, {"type": "join", "nick": "  Bob "})
    assert await receive_json(bob) == {"type": "joined", "room": "lobby", "nick": "Bob"}
    assert await receive_json(watcher) == {"type": "joined", "room": "lobby", "nick": "Bob"}
    await say(bob, "hi")
    assert (await receive_type(watcher, "message"))["from"] == "Bob"


@pytest.mark.parametrize("second", ["alice", "Alice", "ALICE", "ａｌｉｃｅ", " alice "])
async def test_nick_collision_is_refused(ws_connect, second):
    """A nick equal after trim, NFKC and casefold to one held is nick_taken."""
    await join_room(ws_connect, nick="alice")
    other, _ = await join_room(ws_connect)
    await send_json(other, {"type": "join", "nick": second})
    error = await receive_type(other, "error")
    assert error["code"] == "nick_taken"


@pytest.mark.parametrize("first, second", [("ace", "\u0430\u0441\u0435"), ("alice", "AL\u0130CE"),
                                           ("modern", "rnodern")])
async def test_look_alike_nick_is_refused(ws_connect, first, second):
    """A nickname whose confusable skeleton matches one held (all-Cyrillic асе for ace,
    ALİCE for alice, rn for m) is nick_taken."""
    await join_room(ws_connect, nick=first)
    other, _ = await join_room(ws_connect)
    await send_json(other, {"type": "join", "nick": second})
    assert (await receive_type(other, "error"))["code"] == "nick_taken"


@pytest.mark.parametrize("nick", ["\u0430lice", "alic\u0435", "line\u2028break",
                                  "para\u2029break", "bidi\u2066evil"])
async def test_mixed_script_or_separator_nick_is_bad_nick(ws_connect, nick):
    """A Latin nickname with a Cyrillic letter, a line or paragraph separator, or a bidi
    isolate is bad_nick."""
    conn, _ = await join_room(ws_connect)
    await send_json(conn, {"type": "join", "nick": nick})
    assert (await receive_json(conn))["code"] == "bad_nick"


async def test_taken_nick_at_connect_gives_anonymous_welcome_then_error(ws_connect):
    """A taken ?nick= still gets a welcome, with nick null, followed by nick_taken."""
    await join_room(ws_connect, nick="alice")
    conn, welcome = await join_room(ws_connect, nick="Alice")
    assert welcome["nick"] is None and welcome["online"] == ["alice"]
    error = await receive_json(conn)
    assert (error["type"], error["code"]) == ("error", "nick_taken")


@pytest.mark.parametrize("nick", ["", "a" * 33, "zero\u200bwidth", "bidi\u202eevil", "ctl\x07"])
async def test_invalid_nick_at_connect_gives_anonymous_welcome_then_bad_nick(ws_connect, nick):
    """An invalid ?nick= gets a welcome with nick null, then bad_nick."""
    conn, welcome = await join_room(ws_connect, nick=nick)
    assert welcome["nick"] is None
    assert (await receive_json(conn))["code"] == "bad_nick"


@pytest.mark.parametrize("nick", [None, 5, "", "\u200b", ["alice"]])
async def test_invalid_nick_in_join_is_bad_nick(ws_connect, nick):
    """A join whose nick is missing, not a string or invalid gets bad_nick and nothing else."""
    conn, _ = await join_room(ws_connect)
    await send_json(conn, {"type": "join", "nick": nick})
    assert (await receive_json(conn))["code"] == "bad_nick"
    await say(conn, "still here")
    assert (await receive_json(conn))["from"] is None


async def test_nick_is_free_again_after_its_holder_leaves(ws_connect):
    """Once alice's connection closes, someone else may take the nick."""
    alice, _ = await join_room(ws_connect, nick="alice")
    watcher, _ = await join_room(ws_connect)
    alice.close()
    assert await receive_type(watcher, "left") == {"type": "left", "room": "lobby", "nick": "alice"}
    _, welcome = await join_room(ws_connect, nick="alice")
    assert welcome["nick"] == "alice"


async def test_presence_join_and_leave(ws_connect):
    """Everyone gets joined when a nick arrives and left when its connection closes."""
    watcher, _ = await join_room(ws_connect)
    bob, _ = await join_room(ws_connect, nick="bob")
    assert await receive_json(watcher) == {"type": "joined", "room": "lobby", "nick": "bob"}
    bob.close()
    assert await receive_json(watcher) == {"type": "left", "room": "lobby", "nick": "bob"}


async def test_anonymous_leaving_announces_nothing(ws_connect):
    """An anonymous connection closing sends no left frame."""
    watcher, _ = await join_room(ws_connect)
    anonymous, _ = await join_room(ws_connect)
    anonymous.close()
    await join_room(ws_connect, nick="marker")
    assert (await receive_json(watcher))["nick"] == "marker"


async def test_same_browser_tabs_share_a_nick_and_leave_once(ws_connect):
    """Two connections with one chat cookie share a nick; left comes when the last closes."""
    watcher, _ = await join_room(ws_connect)
    tab1, _ = await join_room(ws_connect, nick="alice", cookie="c" * 32)
    tab2, welcome = await join_room(ws_connect, nick="alice", cookie="c" * 32)
    assert welcome["nick"] == "alice" and welcome["online"] == ["alice"]
    assert await receive_json(watcher) == {"type": "joined", "room": "lobby", "nick": "alice"}
    tab1.close()
    tab2.close()
    assert await receive_json(watcher) == {"type": "left", "room": "lobby", "nick": "alice"}


async def test_private_message_reaches_only_its_two_parties(ws_connect):
    """A private message goes to the recipient and back to the sender, to nobody else."""
    alice, _ = await join_room(ws_connect, nick="alice")
    bob, _ = await join_room(ws_connect, nick="bob")
    carol, _ = await join_room(ws_connect, nick="carol")
    anonymous, _ = await join_room(ws_connect)
    await say(alice, "psst", to="BOB")
    for conn in (alice, bob):
        frame = await receive_type(conn, "private")
        assert {k: frame[k] for k in ("type", "room", "from", "to", "text")} == {
            "type": "private", "room": "lobby", "from": "alice", "to": "bob", "text": "psst"}
    await say(alice, "public marker")
    for conn in (carol, anonymous):
        frame = await receive_json(conn)
        while frame["type"] == "joined":
            frame = await receive_json(conn)
        assert frame["type"] == "message" and frame["text"] == "public marker"


async def test_private_to_someone_absent_is_no_such_user(ws_connect):
    """A private message to a nick not in the room gets no_such_user."""
    alice, _ = await join_room(ws_connect, nick="alice")
    await say(alice, "hello?", to="nobody")
    assert (await receive_type(alice, "error"))["code"] == "no_such_user"


async def test_private_from_anonymous_is_nick_required(ws_connect):
    """An anonymous sender of a private message gets nick_required."""
    await join_room(ws_connect, nick="bob")
    anonymous, _ = await join_room(ws_connect)
    await say(anonymous, "hi bob", to="bob")
    assert (await receive_type(anonymous, "error"))["code"] == "nick_required"


async def test_client_sent_from_is_ignored(ws_connect):
    """A "from" field sent by the client is replaced by the server's idea of the sender."""
    bob, _ = await join_room(ws_connect, nick="bob")
    await say(bob, "I am alice", **{"from": "alice"})
    frame = await receive_type(bob, "message")
    assert frame["from"] == "bob"


async def test_markup_comes_back_byte_for_byte(ws_connect):
    """Text that looks like HTML or script is delivered exactly as sent."""
    a, _ = await join_room(ws_connect)
    text = "<script>alert(1)</script><img src=x onerror=alert(2)> &amp; \"' 🙂"
    await say(a, text)
    assert (await receive_json(a))["text"] == text


@pytest.mark.parametrize("message, code", [
    ({"type": "message"}, "bad_message"),
    ({"type": "message", "text": ""}, "bad_message"),
    ({"type": "message", "text": 12}, "bad_message"),
    ({"type": "message", "text": "x" * 4001}, "too_long"),
    ({"type": "message", "text": "hi", "to": 3}, "bad_message"),
])
async def test_bad_messages_are_refused_and_the_connection_stays(ws_connect, message, code):
    """Missing, empty, non-string or too long text gets its error; the connection stays."""
    conn, _ = await join_room(ws_connect)
    await send_json(conn, message)
    assert (await receive_json(conn))["code"] == code
    await say(conn, "still works")
    assert (await receive_json(conn))["text"] == "still works"


async def test_text_of_4000_characters_is_delivered(ws_connect):
    """The longest message, 4,000 code points, is delivered."""
    conn, _ = await join_room(ws_connect)
    await say(conn, "é" * 4000)
    assert (await receive_json(conn))["text"] == "é" * 4000


async def test_newcomer_gets_history_oldest_first(ws_connect):
    """A client joining later gets earlier messages in its welcome, oldest first."""
    a, _ = await join_room(ws_connect)
    for n in range(3):
        await say(a, f"m{n}")
        await receive_json(a)
    _, welcome = await join_room(ws_connect)
    assert [m["text"] for m in welcome["history"]] == ["m0", "m1", "m2"]
    assert "recovered" not in welcome


async def test_history_holds_at_most_50_messages(ws_connect):
    """The welcome history holds the last 50 messages by default."""
    a, _ = await join_room(ws_connect)
    for n in range(60):
        await say(a, f"m{n}")
    for _ in range(60):
        await receive_json(a)
    _, welcome = await join_room(ws_connect)
    assert [m["text"] for m in welcome["history"]] == [f"m{n}" for n in range(10, 60)]


async def test_history_shows_private_messages_only_to_their_parties(ws_connect):
    """A newcomer's history holds private messages only if its nick sent or received them."""
    alice, _ = await join_room(ws_connect, nick="alice")
    await join_room(ws_connect, nick="bob")
    await say(alice, "secret", to="bob")
    await receive_type(alice, "private")
    _, outsider = await join_room(ws_connect, nick="carol")
    assert outsider["history"] == []


async def test_reconnect_with_since_recovers_missed_messages(ws_connect):
    """A client that reconnects with since gets exactly what it missed and recovered true."""
    reader, _ = await join_room(ws_connect, nick="reader")
    writer, _ = await join_room(ws_connect, nick="writer")
    await say(writer, "seen")
    last_seen = (await receive_type(reader, "message"))["id"]
    reader.close()
    for text in ["missed 1", "missed 2"]:
        await say(writer, text)
    await receive_type(writer, "message")
    await receive_type(writer, "message")
    await receive_type(writer, "message")
    _, welcome = await join_room(ws_connect, nick="reader", since=last_seen)
    assert welcome["recovered"] is True
    assert [m["text"] for m in welcome["history"]] == ["missed 1", "missed 2"]


async def test_reconnect_up_to_date_gets_empty_history(ws_connect):
    """A reconnect whose since is the newest id gets no history and recovered true."""
    a, _ = await join_room(ws_connect)
    await say(a, "x")
    last = (await receive_json(a))["id"]
    _, welcome = await join_room(ws_connect, since=last)
    assert welcome["history"] == [] and welcome["recovered"] is True


# Redis's version of a restart (it loses its data) is in tests/chat/test_redischat.py.
@pytest.mark.parametrize("backend", ["embedded"])
async def test_reconnect_after_restart_is_not_recovered(http_server_client, ws_connect, backend):
    """A since from before a restart gets recovered false and the newest history."""
    a, _ = await join_room(ws_connect)
    await say(a, "before restart")
    old_id = (await receive_json(a))["id"]
    restarted = make_app(Config(hub=Hub()))
    http_server_client._http_server.request_callback = restarted  # same port, fresh state
    b, _ = await join_room(ws_connect)
    await say(b, "after restart")
    new_id = (await receive_json(b))["id"]
    _, welcome = await join_room(ws_connect, since=old_id)
    assert new_id > old_id
    assert welcome["recovered"] is False
    assert [m["text"] for m in welcome["history"]] == ["after restart"]


@pytest.mark.parametrize("since", ["abc", "1.5", "99999999999999999999"])
async def test_unreadable_since_is_not_recovered(ws_connect, since):
    """A since that is not an id we issued gets recovered false."""
    _, welcome = await join_room(ws_connect, since=since)
    assert welcome["recovered"] is False


async def test_wire_format_is_json_objects(ws_connect):
    """Every chat frame is a JSON object with a type."""
    conn, _ = await join_room(ws_connect, nick="x")
    await say(conn, "y")
    raw = await conn.read_message()
    assert isinstance(json.loads(raw), dict)


async def test_markup_in_a_nickname_is_refused(ws_connect):
    """A nickname that looks like a script tag is outside the identifier profile: bad_nick."""
    conn, welcome = await join_room(ws_connect, nick="<script>x</script>")
    assert welcome["nick"] is None
    assert (await receive_json(conn))["code"] == "bad_nick"


async def test_lone_surrogate_in_text_is_refused(ws_connect):
    """Text holding an escaped lone surrogate (not encodable) is bad_message; others unharmed."""
    sender, _ = await join_room(ws_connect)
    listener, _ = await join_room(ws_connect)
    await sender.write_message('{"type": "message", "text": "bad \\udc00 text"}')
    assert (await receive_json(sender))["code"] == "bad_message"
    await say(sender, "good text")
    assert (await receive_json(listener))["text"] == "good text"


# One message as heavy as the wire allows: 4,000 control characters, each escaped to six
# bytes of JSON ("\u0001"), about 24 KB a frame.
HEAVY = "\x01" * 4000


async def test_heavy_history_gives_a_welcome_within_the_room_bound(ws_connect):
    """After 50 messages of 4,000 control characters a newcomer gets a welcome of at most
    --chat-room-history-bytes and stays connected."""
    writer, _ = await join_room(ws_connect)
    for _ in range(50):
        await say(writer, HEAVY)
        await receive_type(writer, "message")
    newcomer = await ws_connect("/ws/chat/lobby")
    raw = await receive(newcomer)
    assert len(raw.encode("utf-8")) <= rules.DEFAULT_ROOM_HISTORY_BYTES
    assert json.loads(raw)["history"][-1]["text"] == HEAVY
    await say(newcomer, "still here")
    assert (await receive_type(newcomer, "message"))["text"] == "still here"


async def test_replay_past_the_room_bound_is_not_recovered(ws_connect):
    """A since older than what the byte bound kept gets recovered false, within the bound."""
    reader, _ = await join_room(ws_connect)
    writer, _ = await join_room(ws_connect)
    await say(writer, "seen")
    last_seen = (await receive_type(reader, "message"))["id"]
    reader.close()
    for _ in range(20):  # ~480 KB: more than the room keeps
        await say(writer, HEAVY)
    for _ in range(21):
        await receive_type(writer, "message")
    conn = await ws_connect(f"/ws/chat/lobby?since={last_seen}")
    raw = await receive(conn)
    welcome = json.loads(raw)
    assert welcome["recovered"] is False
    assert len(raw.encode("utf-8")) <= rules.DEFAULT_ROOM_HISTORY_BYTES


async def test_private_history_of_a_cookieless_nick_does_not_pass_to_its_next_holder(ws_connect):
    """Bob whispers to cookie-less alice; alice leaves; eve taking ?nick=alice never sees it."""
    watcher, _ = await join_room(ws_connect)
    alice, _ = await join_room(ws_connect, nick="alice")
    bob, _ = await join_room(ws_connect, nick="bob")
    await say(bob, "the secret", to="alice")
    await receive_type(alice, "private")
    alice.close()
    await receive_type(watcher, "left")
    _, welcome = await join_room(ws_connect, nick="alice")
    assert welcome["nick"] == "alice"
    assert "the secret" not in json.dumps(welcome)


async def test_nick_change_is_one_renamed_frame(ws_connect):
    """A member taking another nickname: everyone, the member too, gets one renamed frame,
    no left and no joined."""
    watcher, _ = await join_room(ws_connect, nick="watcher")
    alice, _ = await join_room(ws_connect, nick="alice")
    while (await receive_type(watcher, "joined"))["nick"] != "alice":
        pass
    await receive_type(alice, "joined")
    await send_json(alice, {"type": "join", "nick": "alicia"})
    renamed = {"type": "renamed", "room": "lobby", "from": "alice", "to": "alicia"}
    assert await receive_json(alice) == renamed
    assert await receive_json(watcher) == renamed
    await say(alice, "marker")
    assert (await receive_json(watcher))["text"] == "marker"  # nothing came in between
    late, welcome = await join_room(ws_connect)
    assert welcome["online"] == ["watcher", "alicia"]


async def test_joiner_gets_its_own_joined_and_later_joins(ws_connect):
    """The joiner's own socket gets its joined after the welcome, and the joins after it."""
    bob, _ = await join_room(ws_connect, nick="bob")
    alice, welcome = await join_room(ws_connect, nick="alice")
    assert welcome["online"] == ["bob", "alice"]
    assert await receive_json(alice) == {"type": "joined", "room": "lobby", "nick": "alice"}
    assert await receive_json(bob) == {"type": "joined", "room": "lobby", "nick": "bob"}
    assert await receive_json(bob) == {"type": "joined", "room": "lobby", "nick": "alice"}
    await join_room(ws_connect, nick="carol")
    for conn in (alice, bob):
        assert await receive_json(conn) == {"type": "joined", "room": "lobby", "nick": "carol"}


async def test_welcome_counts_anonymous_readers(ws_connect):
    """The welcome's readers is the room's connections without a nickname."""
    await join_room(ws_connect, room="r", nick="alice")
    await join_room(ws_connect, room="r")
    _, welcome = await join_room(ws_connect, room="r")
    assert welcome["readers"] == 2
    _, welcome = await join_room(ws_connect, room="r", nick="bob")
    assert welcome["readers"] == 2


async def test_readers_frame_follows_the_anonymous_count(ws_connect):
    """Readers opening, taking a nickname or closing reach the room as readers frames."""
    alice, _ = await join_room(ws_connect, room="r", nick="alice")
    reader, _ = await join_room(ws_connect, room="r")
    assert await receive_type(alice, "readers") == {"type": "readers", "room": "r", "count": 1}
    await send_json(reader, {"type": "join", "nick": "bob"})
    assert (await receive_type(alice, "readers"))["count"] == 0
    other, _ = await join_room(ws_connect, room="r")
    assert (await receive_type(alice, "readers"))["count"] == 1
    other.close()
    assert (await receive_type(alice, "readers"))["count"] == 0


async def test_readers_frames_are_coalesced(ws_connect):
    """Many readers arriving within the interval cost one or two readers frames, the last
    one carrying the final count."""
    alice, _ = await join_room(ws_connect, room="r", nick="alice")
    for _ in range(30):
        await join_room(ws_connect, room="r")
    counts = []
    while not counts or counts[-1] != 30:
        counts.append((await receive_type(alice, "readers"))["count"])
    assert len(counts) <= 2
    await say(alice, "marker")  # nothing more is due: the next frame is the message
    assert (await receive_any(alice))["text"] == "marker"


async def test_first_reader_of_a_room_gets_no_redundant_readers_frame(ws_connect):
    """Alone in a room, the welcome's count is all a reader gets."""
    reader, welcome = await join_room(ws_connect, room="alone")
    assert welcome["readers"] == 1
    await say(reader, "marker")
    assert (await receive_any(reader))["text"] == "marker"
