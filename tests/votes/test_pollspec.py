"""Validation of new polls and the poll JSON, without a server."""

import pytest

from realtime.votes.spec import Option, Poll, PollFieldError, Tally, validate_new_poll
from realtime.wire.messages import ClientError

GOOD = {"title": "Lunch?", "options": ["Pizza", "Soup"]}


def code_of(body) -> str:
    with pytest.raises(ClientError) as caught:
        validate_new_poll(body)
    return caught.value.code


def test_good_body_is_accepted_with_one_vote_per_voter_by_default():
    """A title and two options make a poll where each voter votes once."""
    new = validate_new_poll(GOOD)
    assert (new.title, new.labels, new.one_vote_per_voter) == ("Lunch?", ("Pizza", "Soup"), True)


def test_every_click_counts_only_when_asked():
    """one_vote_per_voter: false makes a poll where every click counts."""
    assert validate_new_poll({**GOOD, "one_vote_per_voter": False}).one_vote_per_voter is False


def test_text_is_stripped_and_normalized():
    """Surrounding spaces go and text is stored in NFC."""
    new = validate_new_poll({"title": "  Cafe\u0301 ", "options": [" a", "b "]})
    assert new.title == "Caf\u00e9" and new.labels == ("a", "b")


def test_limits_count_code_points_not_bytes():
    """200 CJK characters are a valid title even though they are 600 UTF-8 bytes."""
    new = validate_new_poll({"title": "钢" * 200, "options": ["铁" * 100, "贝"]})
    assert len(new.title) == 200


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_body_that_is_not_an_object_is_bad_request(body):
    """A JSON array, string, null or number is bad_request."""
    assert code_of(body) == "bad_request"


@pytest.mark.parametrize("title", [None, "", "   ", 7, "x" * 201, "a\nb", "\ud800", ["t"]])
def test_bad_titles_are_refused(title):
    """Missing, empty, too long, multi-line, lone-surrogate or non-string titles are bad_title."""
    assert code_of({**GOOD, "title": title}) == "bad_title"


@pytest.mark.parametrize("options", [
    None, "a,b", ["only"], [str(n) for n in range(21)], ["a", ""], ["a", " "], ["a", 2],
    ["a", "x" * 101], ["a", "a"], ["Yes", "yes"], ["a", "b\tc"], ["a", "\udfff"],
])
def test_bad_options_are_refused(options):
    """Too few, too many, empty, long, non-string or duplicate options are bad_options."""
    assert code_of({**GOOD, "options": options}) == "bad_options"


@pytest.mark.parametrize("flag", [None, "true", 1, 0])
def test_one_vote_flag_must_be_a_boolean(flag):
    """one_vote_per_voter must be true or false when present."""
    assert code_of({**GOOD, "one_vote_per_voter": flag}) == "bad_one_vote_per_voter"


def test_twenty_options_are_allowed():
    """The upper bound itself is valid."""
    assert len(validate_new_poll({**GOOD, "options": [str(n) for n in range(20)]}).labels) == 20


def test_poll_json_has_the_documented_shape():
    """Poll JSON carries id, title, the flags, options with glosses and votes, and the
    total."""
    poll = Poll("p1", "T", True, (Option("1", "A", 2, "a gloss"), Option("2", "B", 3)),
                closed=True)
    assert poll.to_json() == {
        "id": "p1", "title": "T", "one_vote_per_voter": True, "listed": False, "closed": True,
        "code": None, "results": "live", "revealed": False, "allow_change": False,
        "max_choices": 1,
        "options": [{"id": "1", "label": "A", "gloss": "a gloss", "votes": 2},
                    {"id": "2", "label": "B", "gloss": None, "votes": 3}],
        "total": 5,
    }


def test_tally_frame_has_every_count_and_the_total():
    """A tally frame names the poll and carries all counts and their sum."""
    assert Tally("p1", {"1": 2, "2": 0}).to_json() == {
        "type": "tally", "poll": "p1", "votes": {"1": 2, "2": 0}, "total": 2,
    }


@pytest.mark.parametrize("body, field", [
    ({"options": ["a", "b"]}, "title"),
    ({**GOOD, "options": None}, "options"),
    ({**GOOD, "options": ["a", "b", "A"]}, "options.2"),
    ({**GOOD, "options": ["a", "b\nc"]}, "options.1"),
    ({**GOOD, "one_vote_per_voter": 1}, "one_vote_per_voter"),
    ({**GOOD, "listed": None}, "listed"),
])
def test_refusals_name_their_field(body, field):
    """Every refusal of a field says which field it is about."""
    with pytest.raises(PollFieldError) as caught:
        validate_new_poll(body)
    assert caught.value.field == field


def test_listed_is_off_by_default():
    """A poll is unlisted unless the body says listed: true."""
    assert validate_new_poll(GOOD).listed is False
    assert validate_new_poll({**GOOD, "listed": True}).listed is True


@pytest.mark.parametrize("twin", ["Pizza\u200b", "\uff30\uff49\uff5a\uff5a\uff41", "PIZZA",
                                  "Piz\u00adza", "Pizza\ufe0f", "Pizza  "])
def test_options_that_look_the_same_are_one_option(twin):
    """Pizza with a zero-width space, in fullwidth letters, upper case, with a soft hyphen or
    a variation selector is the same option as Pizza."""
    with pytest.raises(PollFieldError) as caught:
        validate_new_poll({**GOOD, "options": ["Pizza", twin]})
    assert (caught.value.code, caught.value.field) == ("bad_options", "options.1")
    assert caught.value.message == "Option 2 is the same as option 1."


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u202a", "\u202b", "\u202c",
                                  "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                  "\u2069"])
def test_separators_and_bidi_controls_are_refused_in_titles_and_options(char):
    """A line or paragraph separator or a bidi override or isolate is refused in the title
    and in an option, by field."""
    assert code_of({**GOOD, "title": f"Lunch{char}?"}) == "bad_title"
    with pytest.raises(PollFieldError) as caught:
        validate_new_poll({**GOOD, "options": ["Pizza", f"So{char}up"]})
    assert (caught.value.code, caught.value.field) == ("bad_options", "options.1")


@pytest.mark.parametrize("label", ["\u200b", "\u200b\u200d", " \ufeff "])
def test_an_option_of_invisible_characters_is_empty(label):
    """An option made only of zero-width characters is refused as empty."""
    with pytest.raises(PollFieldError) as caught:
        validate_new_poll({**GOOD, "options": ["Pizza", label]})
    assert caught.value.message == "Option 2 is empty."


def test_every_problem_of_a_body_is_listed_first_one_first():
    """A body with a bad title, two bad options and a bad flag is refused with all four
    problems, each naming its field, the first one being the error itself."""
    with pytest.raises(PollFieldError) as caught:
        validate_new_poll({"title": "", "options": ["a", "", "A"], "listed": "yes"})
    problems = [(p.code, p.field) for p in caught.value.problems]
    assert problems == [("bad_title", "title"), ("bad_options", "options.1"),
                        ("bad_options", "options.2"), ("bad_listed", "listed")]
    assert caught.value.problems[0] is caught.value


@pytest.mark.parametrize("fields, code", [
    ({"max_choices": 0}, "bad_max_choices"),
    ({"max_choices": 3}, "bad_max_choices"),
    ({"max_choices": True}, "bad_max_choices"),
    ({"max_choices": "2"}, "bad_max_choices"),
    ({"allow_change": "yes"}, "bad_allow_change"),
    ({"one_vote_per_voter": False, "allow_change": True}, "bad_allow_change"),
    ({"one_vote_per_voter": False, "max_choices": 2}, "bad_max_choices"),
])
def test_multiple_choice_and_changes_are_checked(fields, code):
    """max_choices is 1 to the number of options, allow_change a boolean, and both need
    one vote per voter."""
    assert code_of({**GOOD, **fields}) == code


def test_multiple_choice_and_changes_are_off_by_default():
    """A poll takes one choice and no change unless asked; asked, it takes them."""
    new = validate_new_poll(GOOD)
    assert (new.allow_change, new.max_choices) == (False, 1)
    new = validate_new_poll({**GOOD, "allow_change": True, "max_choices": 2})
    assert (new.allow_change, new.max_choices) == (True, 2)
