"""key=value log lines: client-supplied values cannot break out of their field."""

from realtime.ops.logfmt import logfmt


def test_plain_values_are_bare():
    """Simple values are written as they are, in the order given."""
    assert logfmt(event="connect", ip="127.0.0.1", code=1000) == (
        "event=connect ip=127.0.0.1 code=1000"
    )


def test_values_with_spaces_quotes_or_equals_are_json_strings():
    """A value that could fake another field is quoted and escaped."""
    assert logfmt(origin='http://x" admin=1') == 'origin="http://x\\" admin=1"'


def test_newlines_cannot_start_a_new_log_line():
    """A newline in a value is escaped, so one record stays one line."""
    line = logfmt(origin="http://x\nevent=fake")
    assert "\n" not in line and line == 'origin="http://x\\nevent=fake"'


def test_none_floats_and_bools_have_fixed_spellings():
    """None is "-", floats have three decimals, booleans are true/false."""
    assert logfmt(a=None, b=1.23456, c=True) == "a=- b=1.235 c=true"


def test_empty_string_is_quoted():
    """An empty value is visible as ""."""
    assert logfmt(origin="") == 'origin=""'
