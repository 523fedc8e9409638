"""What a poll is: its data, the validation of a new one, and its JSON form. Pure, no I/O.

Poll JSON, as the HTTP API and the ``poll`` frame carry it::

    {"id": "k3J9x_2a", "title": "Lunch?", "one_vote_per_voter": true,
     "options": [{"id": "1", "label": "Pizza", "votes": 3}, ...], "total": 3}
"""

import unicodedata
from dataclasses import dataclass
from typing import Any

from realtime.messages import ClientError, Message, quote

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


@dataclass(frozen=True)
class Poll:
    """A poll with its counts as of one moment."""

    id: str
    title: str
    one_vote_per_voter: bool
    options: tuple[Option, ...]

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
            "options": [
                {"id": option.id, "label": option.label, "votes": option.votes}
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
        ClientError: ``bad_request`` (not an object), ``bad_title``, ``bad_options`` or
            ``bad_one_vote_per_voter``.
    """
    if not isinstance(body, dict):
        raise ClientError("bad_request", "The body must be a JSON object.")
    title = clean_text(body.get("title"), TITLE_MAX)
    if title is None:
        raise ClientError(
            "bad_title", f'"title" must be a one-line string of 1 to {TITLE_MAX} characters.'
        )
    raw = body.get("options")
    if not isinstance(raw, list) or not OPTIONS_MIN <= len(raw) <= OPTIONS_MAX:
        raise ClientError(
            "bad_options", f'"options" must be a list of {OPTIONS_MIN} to {OPTIONS_MAX} strings.'
        )
    labels = []
    seen = set()
    for value in raw:
        label = clean_text(value, LABEL_MAX)
        if label is None:
            raise ClientError(
                "bad_options",
                f"Every option must be a one-line string of 1 to {LABEL_MAX} characters.",
            )
        if label.casefold() in seen:
            raise ClientError("bad_options", f"The option {quote(label)} is given twice.")
        seen.add(label.casefold())
        labels.append(label)
    one_vote = body.get("one_vote_per_voter", False)
    if not isinstance(one_vote, bool):
        raise ClientError("bad_one_vote_per_voter", '"one_vote_per_voter" must be true or false.')
    return NewPoll(title, tuple(labels), one_vote)
