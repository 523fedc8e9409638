"""What a poll is: its data, the validation of a new one, and its JSON form. Pure, no I/O.

Poll JSON, as the HTTP API and the ``poll`` frame carry it::

    {"id": "k3j9xa2mpq", "title": "Lunch?", "one_vote_per_voter": true,
     "listed": false, "closed": false, "code": "HK7M3Q", "results": "live", "revealed": false,
     "allow_change": false, "max_choices": 1,
     "options": [{"id": "1", "label": "Pizza", "gloss": null, "votes": 3}, ...], "total": 3}

A refused new poll raises ``PollFieldError``: a ``ClientError`` that also names the field it
is about (``"title"``, ``"options"``, ``"options.2"`` for the third option, ...), so a form
can show the sentence next to that field; it is the first of every problem the body has
(``.problems``), so a form can show them all at once.

Text. Titles and options are one line of plain text: no control characters, no line or
paragraph separators (U+2028, U+2029) and no bidi embeddings, overrides or isolates (U+202A
to U+202E, U+2066 to U+2069), which would let one option's text rearrange what is shown
around it. Two options are the same when their ``option_key`` is: NFKC, case-folded, with
invisible characters (format characters such as U+200B, variation selectors, fillers)
removed and runs of spaces made one, so ``Pizza``, ``Pizza`` + U+200B and ``Ｐｉｚｚａ`` are
one option.
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Optional

from realtime.wire.messages import ClientError, Message

TITLE_MAX = 200  # code points
LABEL_MAX = 100  # code points
OPTIONS_MIN = 2
OPTIONS_MAX = 20
POLL_ID_MAX = 64  # longer ids are never looked up
RESULTS = ("live", "hidden")  # when voters see the counts: as they come, or once revealed


@dataclass(frozen=True)
class Option:
    """One choice of a poll; ``id`` is stable for the life of the poll."""

    id: str
    label: str
    votes: int = 0
    gloss: Optional[str] = None  # a short explanation shown under the label (the demo's)


@dataclass(frozen=True)
class Poll:
    """A poll with its counts as of one moment."""

    id: str
    title: str
    one_vote_per_voter: bool
    options: tuple[Option, ...]
    listed: bool = False  # shown in GET /api/polls and on /vote
    closed: bool = False  # takes no votes until reopened
    code: Optional[str] = None  # the short join code (/j/<code>); None for older polls
    results: str = "live"  # "live", or "hidden" until the owner reveals them
    revealed: bool = False  # a "hidden" poll's results were revealed (for good)
    allow_change: bool = False  # a voter may change its vote while the poll is open
    max_choices: int = 1  # options one ballot may name (multiple choice above 1)

    @property
    def hidden(self) -> bool:
        """Whether the per-option counts are kept from every page (``results: "hidden"``,
        not yet revealed); the total is still shown."""
        return self.results == "hidden" and not self.revealed

    @property
    def total(self) -> int:
        """Votes over every option."""
        return sum(option.votes for option in self.options)

    def option_ids(self) -> frozenset[str]:
        """The ids a vote may name."""
        return frozenset(option.id for option in self.options)

    def to_json(self, reveal: bool = False) -> Message:
        """The poll JSON of the HTTP API and the ``poll`` frame; while the results are
        hidden every option's ``votes`` is null unless ``reveal`` (the owner asks)."""
        hide = self.hidden and not reveal
        return {
            "id": self.id,
            "title": self.title,
            "one_vote_per_voter": self.one_vote_per_voter,
            "listed": self.listed,
            "closed": self.closed,
            "code": self.code,
            "results": self.results,
            "revealed": self.revealed,
            "allow_change": self.allow_change,
            "max_choices": self.max_choices,
            "options": [
                {"id": option.id, "label": option.label, "gloss": option.gloss,
                 "votes": None if hide else option.votes}
                for option in self.options
            ],
            "total": self.total,
        }

    def revealed_frame(self) -> Message:
        """The ``revealed`` frame: the owner revealed the results, here they are."""
        return {"type": "revealed", "poll": self.id,
                "votes": {option.id: option.votes for option in self.options},
                "total": self.total}


@dataclass(frozen=True)
class NewPoll:
    """A validated request to create a poll."""

    title: str
    labels: tuple[str, ...]
    one_vote_per_voter: bool = True  # one vote per voter cookie unless asked otherwise
    listed: bool = False
    glosses: tuple[Optional[str], ...] = ()  # per label, by position; only the demo has any
    results: str = "live"  # or "hidden" until the owner reveals them
    allow_change: bool = False  # one-vote polls only
    max_choices: int = 1  # one-vote polls only above 1


@dataclass(frozen=True)
class Tally:
    """The counts of one poll right after a vote was committed."""

    poll_id: str
    votes: dict[str, int]  # option id -> votes, every option of the poll
    hidden: bool = False  # the poll's results are hidden: the frame carries the total only

    @property
    def total(self) -> int:
        """Votes over every option."""
        return sum(self.votes.values())

    def to_json(self) -> Message:
        """The ``tally`` frame every client of the poll gets (``votes`` null while the
        results are hidden)."""
        return {"type": "tally", "poll": self.poll_id,
                "votes": None if self.hidden else self.votes, "total": self.total}


class PollFieldError(ClientError):
    """A refused new poll: a ``ClientError`` naming the field it is about.

    Args:
        code: ``bad_title``, ``bad_options``, ...
        message: a plain sentence for the person filling the form.
        field: ``"title"``, ``"options"``, ``"options.<index>"`` (0-based), ...

    ``problems`` is every refusal of the body, this one first (``validate_new_poll`` sets
    it; alone, it is just this one).
    """

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(code, message)
        self.field = field
        self.problems: list[PollFieldError] = [self]

    def to_json(self) -> Message:
        """``{"code", "message", "field"}``: one entry of the API's ``errors`` list."""
        return {"code": self.code, "message": self.message, "field": self.field}


# Bidi embeddings, overrides and isolates: invisible, and they reorder the text after them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Invisible code points that are not format characters (category Cf) but show nothing:
# the combining grapheme joiner, Hangul fillers, variation selectors.
INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u3164\uffa0" + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
SPACES = re.compile(r"\s+")


def is_invisible(char: str) -> bool:
    """Whether ``char`` shows nothing by itself (a zero-width space, a joiner, ...)."""
    return char in INVISIBLE or unicodedata.category(char) == "Cf"


def option_key(label: str) -> str:
    """What two options must not share: ``label`` in NFKC, case-folded, without invisible
    characters, its spaces collapsed (``Pizza``, ``Pizza\u200b``, ``Ｐｉｚｚａ`` -> ``pizza``)."""
    text = "".join(char for char in unicodedata.normalize("NFKC", label)
                   if not is_invisible(char))
    text = unicodedata.normalize("NFKC", text.casefold())
    return SPACES.sub(" ", text).strip()


def text_problem(value: Any, limit: int) -> Optional[str]:
    """Why ``value`` is not 1 to ``limit`` code points of printable one-line text (a
    phrase to follow "is"/"must be"), or None if it is."""
    if not isinstance(value, str):
        return "not text"
    text = unicodedata.normalize("NFC", value.strip())
    if not text or all(is_invisible(char) for char in text):
        return "empty"
    if len(text) > limit:
        return f"too long: {len(text)} characters, at most {limit}"
    if any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in text):
        return "not one line of plain text"
    if any(char in BIDI_CONTROLS for char in text):
        return "carrying invisible text-direction controls (U+202A to U+202E, U+2066 to U+2069)"
    return None


def clean_text(value: Any, limit: int) -> str | None:
    """``value`` stripped and NFC-normalized if ``text_problem`` finds nothing wrong with
    it, else None.

    Control characters (newlines among them) are refused, and so are lone surrogates,
    which JSON can carry but UTF-8, and so the database, cannot.
    """
    if text_problem(value, limit) is not None:
        return None
    return unicodedata.normalize("NFC", value.strip())


def validate_new_poll(body: Any) -> NewPoll:
    """Check a parsed ``POST /api/polls`` body; unknown fields are ignored.

    Every field is checked, so the error raised carries all the body's problems
    (``PollFieldError.problems``), the first one first.

    Raises:
        ClientError: ``bad_request`` (not an object).
        PollFieldError: ``bad_title``, ``bad_options``, ``bad_one_vote_per_voter``,
            ``bad_listed``, ``bad_results``, ``bad_allow_change`` or ``bad_max_choices``,
            naming the field (``options.<index>`` for
            one option).
    """
    if not isinstance(body, dict):
        raise ClientError("bad_request", "The body must be a JSON object.")
    problems: list[PollFieldError] = []
    problem = text_problem(body.get("title"), TITLE_MAX)
    if problem is not None:
        message = "Write a question." if problem == "empty" else f"The question is {problem}."
        problems.append(PollFieldError("bad_title", message, "title"))
    labels = _labels(body.get("options"), problems)
    results = body.get("results", "live")
    if results not in RESULTS:
        problems.append(PollFieldError(
            "bad_results", '"results" must be "live" or "hidden".', "results"))
    flags = {}
    for name, default in (("one_vote_per_voter", True), ("listed", False),
                          ("allow_change", False)):
        flag = body.get(name, default)
        if not isinstance(flag, bool):
            problems.append(
                PollFieldError(f"bad_{name}", f'"{name}" must be true or false.', name))
        flags[name] = flag
    choices = body.get("max_choices", 1)
    most = max(len(labels), 1)
    if isinstance(choices, bool) or not isinstance(choices, int) or not 1 <= choices <= most:
        problems.append(PollFieldError(
            "bad_max_choices", f'"max_choices" must be a whole number from 1 to {most}.',
            "max_choices"))
    elif flags["one_vote_per_voter"] is False and (choices > 1 or flags["allow_change"]):
        field = "max_choices" if choices > 1 else "allow_change"
        problems.append(PollFieldError(
            f"bad_{field}", "Multiple choice and changing one's vote need one vote per voter.",
            field))
    if problems:
        first = problems[0]
        first.problems = problems
        raise first
    title = clean_text(body.get("title"), TITLE_MAX)
    assert title is not None
    return NewPoll(title, tuple(labels), **flags, results=results, max_choices=choices)


def _labels(raw: Any, problems: list[PollFieldError]) -> list[str]:
    """The cleaned options of a body; what is wrong with them goes into ``problems``."""
    if not isinstance(raw, list):
        problems.append(PollFieldError(
            "bad_options", f"Give a list of {OPTIONS_MIN} to {OPTIONS_MAX} options.", "options"))
        return []
    if len(raw) < OPTIONS_MIN:
        problems.append(
            PollFieldError("bad_options", f"Give at least {OPTIONS_MIN} options.", "options"))
    if len(raw) > OPTIONS_MAX:
        problems.append(PollFieldError(
            "bad_options", f"Give at most {OPTIONS_MAX} options, not {len(raw)}.", "options"))
        return []
    labels: list[str] = []
    seen: dict[str, int] = {}  # option_key -> the index of the first option with it
    for index, value in enumerate(raw):
        field = f"options.{index}"
        problem = text_problem(value, LABEL_MAX)
        if problem is not None:
            problems.append(
                PollFieldError("bad_options", f"Option {index + 1} is {problem}.", field))
            continue
        label = clean_text(value, LABEL_MAX)
        assert label is not None
        key = option_key(label)
        if key in seen:
            problems.append(PollFieldError(
                "bad_options", f"Option {index + 1} is the same as option {seen[key] + 1}.",
                field))
            continue
        seen[key] = index
        labels.append(label)
    return labels
