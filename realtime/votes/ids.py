"""The names of polls: their ids and their short join codes. Pure, no I/O.

Both are read aloud, copied by hand from a projector and typed on phones, so neither uses a
character that looks like another: no ``0``/``O``, ``1``/``l``/``I``, ``u``/``v`` pairs,
and no ``-`` or ``_`` (which a line may break at, and which are hard to tell apart).

- A **poll id** (``/vote/<id>``) is 10 lowercase letters and digits from ``ID_ALPHABET``
  (29 symbols: about 48 bits, as many as the 8-character ids before them, so an unlisted
  poll cannot be found by guessing).
- A **join code** (``/j/<code>``, ``/vote?code=<code>``) is 6 capitals and digits from
  ``CODE_ALPHABET`` (29 symbols, about 5.9e8 codes): short enough to read off a screen at
  the back of a room. It leads to the poll as its link does; it is as secret as the link.
  Codes are typed by people, so ``normalize_code`` forgives case, spaces and dashes.
"""

import re
import secrets
from typing import Optional

ID_ALPHABET = "abcdefghjkmnpqrstwxyz23456789"  # no i l o u v 0 1
ID_LENGTH = 10
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTWXYZ23456789"  # no I L O U V 0 1
CODE_LENGTH = 6
CODE = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")
SEPARATORS = re.compile(r"[\s\-_.]+")


def new_poll_id() -> str:
    """A fresh random poll id: ``ID_LENGTH`` characters of ``ID_ALPHABET``."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def new_join_code() -> str:
    """A fresh random join code: ``CODE_LENGTH`` characters of ``CODE_ALPHABET``."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> Optional[str]:
    """The join code someone typed, upper-cased without spaces or dashes; None if it
    cannot be one (``"hk7-m3q"`` -> ``"HK7M3Q"``)."""
    code = SEPARATORS.sub("", text).upper()
    return code if CODE.fullmatch(code) else None
