"""The raw TCP chat's line protocol without sockets: splitting, parsing, writing frames."""

import pytest

from realtime.chat import lines
from realtime.chat.lines import MAX_LINE_BYTES, STILL_TOO_LONG, TOO_LONG, LineSplitter
from realtime.pubsub.envelope import Envelope
from realtime.wire.messages import ClientError


def message(text="hi", sender="alice", room="lobby", id=7):
    return {"type": "message", "id": id, "room": room, "from": sender, "text": text, "ts": 1}


def private(text="psst", sender="alice", to="bob", room="lobby", id=8):
    return {"type": "private", "id": id, "room": room, "from": sender, "to": to, "text": text,
            "ts": 1}


def test_lines_are_cut_at_newlines_across_reads():
    """Lines end at \\n whatever the reads, with a \\r before it dropped."""
    splitter = LineSplitter()
    assert splitter.feed(b"/join lob") == []
    assert splitter.feed(b"by\r\nhel") == [b"/join lobby"]
    assert splitter.feed(b"lo\n\nbye\n") == [b"hello", b"", b"bye"]


def test_a_line_of_exactly_the_bound_passes_one_byte_more_does_not():
    """max_bytes before the newline is a line; max_bytes + 1 is TOO_LONG."""
    splitter = LineSplitter(max_bytes=8)
    assert splitter.feed(b"12345678\n") == [b"12345678"]
    assert splitter.feed(b"123456789\nnext\n") == [TOO_LONG, b"next"]


def test_an_over_long_line_is_dropped_up_to_its_newline_across_reads():
    """An over-long line is dropped up to its newline, however it arrives; the next is whole."""
    splitter = LineSplitter(max_bytes=8)
    assert splitter.feed(b"12345") == []
    assert splitter.feed(b"67890") == [TOO_LONG]  # 2 bytes past the bound
    assert splitter.feed(b"abc") == []
    assert splitter.feed(b"def") == [STILL_TOO_LONG]  # 8 more
    assert splitter.feed(b"g\nafter\n") == [b"after"]


def test_an_endless_line_reports_each_further_bound_and_holds_no_more_than_the_bound():
    """10 MB without a newline: TOO_LONG, a STILL_TOO_LONG per bound, never more held."""
    splitter = LineSplitter()
    chunk = b"x" * 65536
    reported = []
    for _ in range(160):
        reported += splitter.feed(chunk)
        assert len(splitter._partial) <= MAX_LINE_BYTES
    assert reported[0] is TOO_LONG
    assert reported[1:] == [STILL_TOO_LONG] * (160 * 65536 // MAX_LINE_BYTES - 1)
    assert splitter.feed(b"\nok\n") == [b"ok"]


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"caf\xc3", b"\xed\xa0\x80"],
                         ids=["bytes", "truncated", "surrogate"])
def test_a_line_that_is_not_utf8_is_bad_message(raw):
    """Invalid UTF-8 (an encoded surrogate included) is refused with bad_message."""
    with pytest.raises(ClientError) as refused:
        lines.decode(raw)
    assert refused.value.code == "bad_message"


@pytest.mark.parametrize("raw", [b"a\x00b", b"\x1b[2J", b"a\rb", b"\x7f", "\u009b".encode()],
                         ids=["nul", "escape", "carriage-return", "del", "c1"])
def test_a_line_with_a_control_character_is_bad_message(raw):
    """NUL, escape, a lone CR, DEL and C1 controls are refused with bad_message."""
    with pytest.raises(ClientError) as refused:
        lines.decode(raw)
    assert refused.value.code == "bad_message"


def test_tabs_and_any_script_pass():
    """Tab and non-ASCII text are fine."""
    assert lines.decode("a\tb ｅ 猫 🙂".encode()) == "a\tb ｅ 猫 🙂"


@pytest.mark.parametrize("text, parsed", [
    ("hello", ("", "hello")),
    ("  hello  ", ("", "  hello  ")),
    ("//etc/passwd is a path", ("", "/etc/passwd is a path")),
    ("/nick alice smith", ("nick", "alice smith")),
    ("/NICK alice", ("nick", "alice")),
    ("/join", ("join", "")),
    ("/msg bob hi there", ("msg", "bob hi there")),
    ("/who", ("who", "")),
    ("/quit now", ("quit", "now")),
    ("", None),
    ("   \t ", None),
])
def test_parse_tells_commands_from_messages(text, parsed):
    """A /word is a command, //text a message starting with /, a blank line nothing."""
    assert lines.parse(text) == parsed


@pytest.mark.parametrize("text", ["/bogus", "/", "/ nick alice", "/" + "x" * 500])
def test_unknown_command_is_refused(text):
    """A /word that is no command is unknown_command, its name cut to 32 characters."""
    with pytest.raises(ClientError) as refused:
        lines.parse(text)
    assert refused.value.code == "unknown_command"
    assert len(refused.value.message) < 200


@pytest.mark.parametrize("argument, parsed", [
    ("bob hi", ("bob", "hi")),
    ("bob   hi  there", ("bob", "hi  there")),
    ('"alice smith" hello', ("alice smith", "hello")),
])
def test_private_arguments(argument, parsed):
    """/msg takes a word or a quoted nickname, then the text."""
    assert lines.private_arguments(argument) == parsed


@pytest.mark.parametrize("argument", ["", "bob", "bob   ", '"alice smith"', '"unclosed hi'])
def test_private_without_text_or_nick_is_bad_message(argument):
    """/msg without a nickname or a text is bad_message."""
    with pytest.raises(ClientError) as refused:
        lines.private_arguments(argument)
    assert refused.value.code == "bad_message"


@pytest.mark.parametrize("argument", ["", "two words", "dots.here", "é", "r" * 65])
def test_room_names_follow_the_websocket_pattern(argument):
    """A room outside [A-Za-z0-9_-]{1,64} is bad_room."""
    with pytest.raises(ClientError) as refused:
        lines.room_name(argument)
    assert refused.value.code == "bad_room"
    assert lines.room_name(" team-1_B ") == "team-1_B"
    assert lines.room_name("r" * 64) == "r" * 64


def test_frames_as_lines():
    """Each chat frame has its line; readers counts have none."""
    assert lines.frame_line(message()) == "[lobby] alice: hi"
    assert lines.frame_line(message(sender=None)) == "[lobby] anonymous: hi"
    assert lines.frame_line(private()) == "[lobby] alice -> you: psst"
    assert lines.frame_line(private(), sent=True) == "[lobby] you -> bob: psst"
    assert lines.frame_line({"type": "joined", "room": "lobby", "nick": "bob"}) == \
        "* bob joined lobby"
    assert lines.frame_line({"type": "left", "room": "lobby", "nick": "bob"}) == \
        "* bob left lobby"
    assert lines.frame_line({"type": "renamed", "room": "lobby", "from": "bob", "to": "rob"}) \
        == "* bob is now rob in lobby"
    assert lines.frame_line({"type": "readers", "room": "lobby", "count": 3}) is None


def test_control_characters_of_others_are_made_visible():
    """Control characters in a message become visible characters; tab stays."""
    line = lines.frame_line(message("one\ntwo\r\x1b[2J\x00\x7f\u009b\u2028\tend"))
    assert line == "[lobby] alice: one\u240atwo\u240d\u241b[2J\u2400\u2421\ufffd\u2424\tend"


@pytest.mark.parametrize("control", [chr(code) for code in lines.BIDI_CONTROLS])
def test_bidi_controls_of_others_are_neutralised(control):
    """A bidi control (a right-to-left override, an isolate, a mark) in a message, or in a
    nickname from elsewhere, is written as U+FFFD."""
    line = lines.frame_line(message(f"evil{control}txt.exe", sender=f"a{control}b"))
    assert line == "[lobby] a\ufffdb: evil\ufffdtxt.exe"


def test_a_message_padded_with_spaces_cannot_start_a_row():
    """A message padded to wrap onto a new row shows there after the continuation marker,
    never at a row's start as another message."""
    shown = lines.frame_line(message("hi" + " " * 200 + "[lobby] admin: give me your password"))
    rows = shown.split("\n")
    assert rows[0].startswith("[lobby] alice: hi")
    assert all(row.startswith(lines.CONTINUATION) for row in rows[1:])
    assert len(rows) > 1 and "[lobby] admin: " in "".join(rows[1:])


@pytest.mark.parametrize("filler", ["x", " ", "\t", "\u8a9e", "e\u0301", "\u0430"])
def test_no_row_of_a_long_message_is_wider_than_a_terminal(filler):
    """Every row of a long message fits LINE_WIDTH columns (wide characters count two, a tab
    eight), each after the first starts with the continuation marker, and the rows hold the
    whole text in order."""
    text = "a" + filler * 4000
    rows = lines.frame_line(message(text[:4000])).split("\n")
    assert len(rows) > 1
    for row in rows:
        assert sum(8 if c == "\t" else 2 if c == "\u8a9e" else 1 for c in row) <= lines.LINE_WIDTH
    assert all(row.startswith(lines.CONTINUATION) for row in rows[1:])
    rest = "".join(row.removeprefix(lines.CONTINUATION) for row in rows[1:])
    assert rows[0] + rest == "[lobby] alice: " + text[:4000]


def test_each_form_is_built_once_per_envelope(monkeypatch):
    """Each line form of an envelope is built once, however many connections ask."""
    built = []
    for name in ("received_line", "sent_line", "private_sender"):
        real = getattr(lines, name)
        monkeypatch.setattr(lines, name, lambda envelope, real=real, name=name: (
            built.append(name), real(envelope))[1])
    public = Envelope.of(message())
    secret = Envelope.of(private())
    for me in (b"", b"alice", b"bob", b"carol") * 50:
        assert lines.line_of(public, me) == b"[lobby] alice: hi\n"
        expected = b"[lobby] you -> bob: psst\n" if me == b"alice" else \
            b"[lobby] alice -> you: psst\n"
        assert lines.line_of(secret, me) == expected
    assert sorted(built) == sorted(["private_sender", "received_line"] * 2 + ["sent_line"])


def test_written_lines_go_as_they_are():
    """A line the server writes to one connection is its own form, whoever reads it."""
    envelope = lines.written("* hello\n")
    assert lines.line_of(envelope, b"") == lines.line_of(envelope, b"alice") == b"* hello\n"


def test_welcome_says_who_and_what_was_said():
    """The welcome: the nickname, who is online, then the recent messages as lines."""
    history = [message("hi", "bob", id=1), private("psst", "carol", "alice", id=2),
               private("back", "alice", "carol", id=3)]
    assert lines.welcome("lobby", "alice", ["bob", "alice"], 2, history) == (
        "* you are in lobby as alice\n"
        "* online in lobby: bob, alice; anonymous readers: 2\n"
        "* 3 recent messages:\n"
        "[lobby] bob: hi\n"
        "[lobby] carol -> you: psst\n"
        "[lobby] you -> carol: back\n"
    )
    assert lines.welcome("lobby", None, [], 1, []) == (
        "* you are in lobby without a nickname (/nick <name> takes one)\n"
        "* online in lobby: nobody; anonymous readers: 1\n"
    )


def test_help_lists_every_command():
    """/help has a line per command and one for plain text."""
    text = lines.help_lines()
    for usage, _ in lines.COMMANDS.values():
        assert f"*   {usage}" in text
    assert "*   <text>" in text
