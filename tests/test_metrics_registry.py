"""The Prometheus text registry on its own."""

import pytest

from realtime.metrics import Registry, escape_label_value, format_value


def test_counter_renders_help_type_and_sample():
    """A counter renders as HELP, TYPE and one sample line."""
    registry = Registry()
    registry.counter("app_hits_total", "Hits.").inc(3)
    assert registry.render() == (
        "# HELP app_hits_total Hits.\n# TYPE app_hits_total counter\napp_hits_total 3\n"
    )


def test_labelled_samples_are_sorted_and_escaped():
    """Label values with quotes, backslashes and newlines are escaped."""
    registry = Registry()
    family = registry.gauge("app_open", "Open things.", ["name"])
    family.labels(name='b"\\\n').set(2)
    family.labels(name="a").inc()
    lines = registry.render().splitlines()
    assert lines[2:] == ['app_open{name="a"} 1', 'app_open{name="b\\"\\\\\\n"} 2']


def test_help_text_newlines_are_escaped():
    """A newline in HELP cannot start a new line of the exposition."""
    registry = Registry()
    registry.counter("x_total", "one\ntwo")
    assert registry.render().splitlines()[0] == "# HELP x_total one\\ntwo"


def test_function_family_is_read_at_render_time():
    """A function gauge shows the value its function returns at each render."""
    registry = Registry()
    box = [1]
    registry.gauge_function("app_box", "The box.", lambda: box[0])
    box[0] = 7
    assert "app_box 7\n" in registry.render()


def test_registering_twice_returns_the_same_family():
    """Asking for the same metric again gives the existing one; a different kind is an error."""
    registry = Registry()
    first = registry.counter("app_total", "A.", ["x"])
    assert registry.counter("app_total", "A.", ["x"]) is first
    with pytest.raises(ValueError):
        registry.gauge("app_total", "A.", ["x"])


def test_wrong_labels_are_refused():
    """labels() with other names than declared raises."""
    family = Registry().counter("app_total", "A.", ["endpoint"])
    with pytest.raises(ValueError):
        family.labels(code="x")


@pytest.mark.parametrize("value, text", [(0, "0"), (2.0, "2"), (0.5, "0.5"),
                                         (float("inf"), "+Inf"), (float("nan"), "NaN")])
def test_values_are_formatted_like_prometheus(value, text):
    """Integers have no decimal point; infinities and NaN use Prometheus' spelling."""
    assert format_value(value) == text


def test_escape_label_value_leaves_plain_text():
    """Plain label values are unchanged."""
    assert escape_label_value("ws_echo") == "ws_echo"
