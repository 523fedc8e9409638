"""Which nicknames may be taken, and when two are the same: Unicode's identifier security
profile (UTS #39), through ICU's ``SpoofChecker`` (the ``icu`` module of PyICU).

The confusables data, the script data and the identifier profile all come from ICU, whose
version the lock pins (``pyicu-wheels``); nothing here is a hand-written table. Every process
of a deployment must run the same ICU: two nicknames are one by their skeleton, and a
skeleton is a key in Redis.

What is refused (``refusal``):

* a character outside the General Security Profile (Identifier_Status=Allowed: letters,
  digits and marks of the scripts in modern use, ``_``, and a few medial characters such as
  ``-``, ``.`` and ``'``), tailored as UTS #31 allows: space is added (``alice smith``) and
  ``:`` is taken out (a TCP line is ``[room] nick: text``; ``admin: hi`` as a nickname would
  forge a sender). So no symbol, emoji, separator (U+2028, U+2029), bidi control or other
  invisible character;
* a mixed-script nickname: one whose resolved script set (UTS #39 section 5.1) is empty,
  such as Latin with a Cyrillic ``а``; Han with Hiragana or Katakana is one script
  (Japanese), as are Han with Bopomofo and Han with Hangul;
* digits of two numbering systems (``1`` with Arabic-Indic ``٣``);
* the same combining mark twice in a row (an invisible difference).

When two nicknames are the same (``skeleton``): their UTS #39 skeletons, taken after case
folding, are equal: a whole-script look-alike (Cyrillic ``асе`` for Latin ``ace``), ``ALİCE``
for ``alice``, ``rn`` for ``m`` are each one nickname with the other.
"""

import re
import unicodedata
from typing import Optional

import icu

# The tailoring of the profile (see above).
ADDED = " "
REMOVED = ":"

_checker = icu.SpoofChecker()
# The characters a nickname may hold: the profile, tailored. Built, not copied: a copy of
# ICU's frozen set stays frozen and ignores add().
ALLOWED = icu.UnicodeSet()
ALLOWED.addAll(_checker.getRecommendedUnicodeSet())
ALLOWED.addAll(_checker.getInclusionUnicodeSet())
ALLOWED.add(ADDED)
ALLOWED.remove(REMOVED)
ALLOWED.freeze()
_checker.setAllowedUnicodeSet(ALLOWED)
_checker.setRestrictionLevel(icu.URestrictionLevel.SINGLE_SCRIPT_RESTRICTIVE)
_checker.setChecks(icu.USpoofChecks.CHAR_LIMIT | icu.USpoofChecks.RESTRICTION_LEVEL
                   | icu.USpoofChecks.MIXED_NUMBERS | icu.USpoofChecks.INVISIBLE)

# Most specific first: a character outside the profile also makes the restriction level fail.
_REFUSALS = (
    (icu.USpoofChecks.CHAR_LIMIT, "A nickname holds letters and digits, with spaces, _, - . ' "
     "and the like: no symbols, colons, emoji, separators or invisible characters."),
    (icu.USpoofChecks.RESTRICTION_LEVEL, "A nickname is written in one script: Latin and "
     "Cyrillic letters (say) cannot be mixed, as look-alikes could pass for someone else."),
    (icu.USpoofChecks.MIXED_NUMBERS, "A nickname's digits come from one numbering system."),
    (icu.USpoofChecks.INVISIBLE, "A nickname cannot repeat a combining mark: the second one "
     "is invisible."),
)

# A dot above after a soft-dotted letter (i, j, ...) is invisible: the letter's own dot.
# Case folding writes İ as i + U+0307, so without this ALİCE would not be alice.
_SOFT_DOTTED = "".join(str(char) for char in icu.UnicodeSet("[:Soft_Dotted:]"))
_EXTRA_DOT = re.compile(f"(?<=[{re.escape(_SOFT_DOTTED)}])\u0307")
_SPACES = re.compile(" {2,}")


def refusal(nick: str) -> Optional[str]:
    """Why ``nick`` (NFKC-normalised, trimmed) may not be a nickname, None if it may."""
    failed = _checker.check(nick)
    for check, message in _REFUSALS:
        if failed & check:
            return message
    return None


def skeleton(nick: str) -> str:
    """The form nicknames are compared in: two nicknames that look alike have one skeleton.

    Case-folded and NFKC-normalised, a dot above a soft-dotted letter dropped, runs of spaces
    made one, then the UTS #39 skeleton (NFD, each confusable character mapped to its
    prototype, NFD again). Text only: letters, digits and the medial characters of an
    accepted nickname, never a control or separator, so it is safe in a Redis key's name.
    """
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", nick.casefold()))
    folded = _SPACES.sub(" ", _EXTRA_DOT.sub("", folded))
    return str(_checker.getSkeleton(0, folded))
