"""What a poll is: its data, the validation of a new one, and its JSON form. Pure, no I/O.

Poll JSON, as the HTTP API and the ``poll`` frame carry it::

    {"id": "k3J9x_2a", "title": "Lunch?", "one_vote_per_voter": true,
     "listed": false, "closed": false,
     "options": [{"id": "1", "label": "Pizza", "gloss": null, "votes": 3}, ...], "total": 3}

A refused new poll raises ``PollFieldError``: a ``ClientError`` that also names the field it
is about (``"title"``, ``"options"``, ``"options.2"`` for the third option, ...), so a form
can show the sentence next to that field.
"""

import unicodedata
from dataclasses import dataclass
from typing import Any, Optional

from realtime.wire.messages import ClientError, Message

TITLE_MAX = 200  # code points
LABEL_MAX = 100  # code points
OPTIONS_MIN = 2
OPTIONS_MAX = 20
POLL_ID_MAX = 64  # longer ids are never looked up


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

    @property
    def total(self) -> int:
        """Votes over every option."""
        return sum(option.votes for option in self.options)

    def option_ids(self) -> frozenset[str]:
        """The ids a vote may name."""
        return frozenset(option.id for option in self.options)

    def to_json(self) -> Message:
        """The poll JSON of the HTTP API and the ``poll`` frame."""
        return {
            "id": self.id,
            "title": self.title,
            "one_vote_per_voter": self.one_vote_per_voter,
            "listed": self.listed,
            "closed": self.closed,
            "options": [
                {"id": option.id, "label": option.label, "gloss": option.gloss,
                 "votes": option.votes}
                for option in self.options
            ],
            "total": self.total,
        }


@dataclass(frozen=True)
class NewPoll:
    """A validated request to create a poll."""

    title: str
    labels: tuple[str, ...]
    one_vote_per_voter: bool = False
    listed: bool = False
    glosses: tuple[Optional[str], ...] = ()  # per label, by position; only the demo has any


@dataclass(frozen=True)
class Tally:
    """The counts of one poll right after a vote was committed."""

    poll_id: str
    votes: dict[str, int]  # option id -> votes, every option of the poll

    @property
    def total(self) -> int:
        """Votes over every option."""
        return sum(self.votes.values())

    def to_json(self) -> Message:
        """The ``tally`` frame every client of the poll gets."""
        return {"type": "tally", "poll": self.poll_id, "votes": self.votes, "total": self.total}


class PollFieldError(ClientError):
    """A refused new poll: a ``ClientError`` naming the field it is about.

    Args:
        code: ``bad_title``, ``bad_options``, ...
        message: a plain sentence for the person filling the form.
        field: ``"title"``, ``"options"``, ``"options.<index>"`` (0-based), ...
    """

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(code, message)
        self.field = field


def text_problem(value: Any, limit: int) -> Optional[str]:
    """Why ``value`` is not 1 to ``limit`` code points of printable one-line text (a
    phrase to follow "is"/"must be"), or None if it is."""
    if not isinstance(value, str):
        return "not text"
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        return "empty"
    if len(text) > limit:
        return f"too long: {len(text)} characters, at most {limit}"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in text):
        return "not one line of plain text"
    return None


def clean_text(value: Any, limit: int) -> str | None:
    """``value`` stripped and NFC-normalized if it is 1 to ``limit`` code points of
    printable one-line text, else None.

    Control characters (newlines among them) are refused, and so are lone surrogates,
    which JSON can carry but UTF-8, and so the database, cannot.
    """
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(text) <= limit:
        return None
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in text):
        return None
    return text


def validate_new_poll(body: Any) -> NewPoll:
    """Check a parsed ``POST /api/polls`` body; unknown fields are ignored.

    Raises:
        ClientError: ``bad_request`` (not an object).
        PollFieldError: ``bad_title``, ``bad_options``, ``bad_one_vote_per_voter`` or
            ``bad_listed``, naming the field (``options.<index>`` for one option).
    """
    if not isinstance(body, dict):
        raise ClientError("bad_request", "The body must be a JSON object.")
    problem = text_problem(body.get("title"), TITLE_MAX)
    if problem is not None:
        message = "Write a question." if problem == "empty" else f"The question is {problem}."
        raise PollFieldError("bad_title", message, "title")
    title = clean_text(body.get("title"), TITLE_MAX)
    assert title is not None
    raw = body.get("options")
    if not isinstance(raw, list):
        raise PollFieldError(
            "bad_options", f"Give a list of {OPTIONS_MIN} to {OPTIONS_MAX} options.", "options"
        )
    if len(raw) < OPTIONS_MIN:
        raise PollFieldError("bad_options", f"Give at least {OPTIONS_MIN} options.", "options")
    if len(raw) > OPTIONS_MAX:
        raise PollFieldError(
            "bad_options", f"Give at most {OPTIONS_MAX} options, not {len(raw)}.", "options"
        )
    labels: list[str] = []
    seen: dict[str, int] = {}  # casefolded label -> its index
    for index, value in enumerate(raw):
        field = f"options.{index}"
        problem = text_problem(value, LABEL_MAX)
        if problem is not None:
            raise PollFieldError("bad_options", f"Option {index + 1} is {problem}.", field)
        label = clean_text(value, LABEL_MAX)
        assert label is not None
        if label.casefold() in seen:
            first = seen[label.casefold()] + 1
            raise PollFieldError(
                "bad_options", f"Option {index + 1} is the same as option {first}.", field
            )
        seen[label.casefold()] = index
        labels.append(label)
    flags = {}
    for name in ("one_vote_per_voter", "listed"):
        flag = body.get(name, False)
        if not isinstance(flag, bool):
            raise PollFieldError(f"bad_{name}", f'"{name}" must be true or false.', name)
        flags[name] = flag
    return NewPoll(title, tuple(labels), **flags)
