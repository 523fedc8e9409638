"""A tiny Prometheus registry: counters and gauges with labels, rendered as text.

Just enough of the text exposition format (version 0.0.4) for ``GET /metrics``, with no
dependency: ``# HELP`` and ``# TYPE`` lines, one sample per label set, label values escaped.
Values can also be read at scrape time from a callable, so objects that already count (the
hub) are not coupled to this module::

    registry = Registry()
    opened = registry.counter("app_opened_total", "Sockets opened.", ["endpoint"])
    opened.labels(endpoint="ws_echo").inc()
    registry.gauge_function("app_topics", "Topics with subscribers.", hub.topic_count)
    text = registry.render()
"""

import math
from typing import Callable, Iterable, Optional, Sequence

from realtime.hub import Hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape HELP text: backslash and newline."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without a decimal point."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Child:
    """One labelled sample of a metric family."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (gauges)."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Set the value (gauges)."""
        self.value = value


class Family:
    """A named metric with fixed label names and one ``Child`` per label set.

    Families without labels are used directly: ``family.inc()``.
    """

    def __init__(self, name: str, help: str, kind: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.kind = kind  # "counter" or "gauge"
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, Child] = {}
        if not self.labelnames:
            self._children[()] = Child()

    def labels(self, **values: str) -> Child:
        """The sample for these label values, created at 0 on first use."""
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(values)}")
        key = tuple(str(values[name]) for name in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = Child()
        return child

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to an unlabelled family."""
        self._children[()].inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from an unlabelled gauge."""
        self._children[()].dec(amount)

    def set(self, value: float) -> None:
        """Set an unlabelled gauge."""
        self._children[()].set(value)

    def value(self, **values: str) -> float:
        """The current value for these labels (0 if never touched); for tests and callers."""
        key = tuple(str(values[name]) for name in self.labelnames)
        child = self._children.get(key)
        return child.value if child is not None else 0.0

    def samples(self) -> Iterable[tuple[LabelValues, float]]:
        """Every (label values, value) pair, in a stable order."""
        return sorted((key, child.value) for key, child in self._children.items())


class FunctionFamily(Family):
    """A family whose one unlabelled value is read from ``read()`` at scrape time."""

    def __init__(self, name: str, help: str, kind: str, read: Callable[[], float]) -> None:
        super().__init__(name, help, kind)
        self.read = read

    def samples(self) -> Iterable[tuple[LabelValues, float]]:
        return [((), float(self.read()))]


class Registry:
    """The metric families of one application, rendered by ``render()``."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def _add(self, family: Family) -> Family:
        existing = self._families.get(family.name)
        if existing is not None:
            if (existing.kind, existing.labelnames) != (family.kind, family.labelnames):
                raise ValueError(f"metric {family.name} is already registered differently")
            return existing
        self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        """A counter (only goes up; name it ``..._total``); the same one if already there."""
        return self._add(Family(name, help, "counter", labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Family:
        """A gauge (goes up and down); the same one if already registered."""
        return self._add(Family(name, help, "gauge", labelnames))

    def counter_function(self, name: str, help: str, read: Callable[[], float]) -> Family:
        """A counter read from ``read()`` at every scrape."""
        return self._add(FunctionFamily(name, help, "counter", read))

    def gauge_function(self, name: str, help: str, read: Callable[[], float]) -> Family:
        """A gauge read from ``read()`` at every scrape."""
        return self._add(FunctionFamily(name, help, "gauge", read))

    def get(self, name: str) -> Optional[Family]:
        """The family called ``name``, if registered."""
        return self._families.get(name)

    def render(self) -> str:
        """Every family in the text exposition format, ending with a newline."""
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for key, value in family.samples():
                labels = ""
                if key:
                    pairs = (
                        f'{name}="{escape_label_value(v)}"'
                        for name, v in zip(family.labelnames, key)
                    )
                    labels = "{" + ",".join(pairs) + "}"
                lines.append(f"{family.name}{labels} {format_value(value)}")
        return "\n".join(lines) + "\n"


def read_rss_bytes() -> float:
    """This process's resident memory from /proc (Linux), 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


class ServerMetrics:
    """The families this server exports, in one place so every name is listed once.

    Sockets update them through ``SocketHandler``; the hub's own counters are read at scrape
    time. Endpoint-specific code adds its families to ``registry`` (or uses ``votes``).

    Args:
        registry: where the families live; ``GET /metrics`` renders it.
        hub: read at scrape time for published/sent/dropped/topics and the broker's state.
    """

    def __init__(self, registry: Registry, hub: Optional[Hub] = None) -> None:
        self.registry = registry
        self.connections = registry.gauge(
            "realtime_connections", "Open WebSocket connections by endpoint.", ["endpoint"])
        self.connections_total = registry.counter(
            "realtime_connections_total", "WebSocket connections opened by endpoint.",
            ["endpoint"])
        self.refused = registry.counter(
            "realtime_connections_refused_total",
            "WebSocket handshakes refused, by reason (origin, ip_limit).", ["reason"])
        self.messages_in = registry.counter(
            "realtime_messages_received_total", "Frames received from clients by endpoint.",
            ["endpoint"])
        self.errors = registry.counter(
            "realtime_errors_total", "Error frames sent to clients by error code.", ["code"])
        self.rate_limited = registry.counter(
            "realtime_rate_limited_total", "Frames refused for exceeding the rate limit.",
            ["endpoint"])
        self.internal_errors = registry.counter(
            "realtime_internal_errors_total", "Connections closed with 1011 after a server bug.")
        # The vote endpoint counts cast votes here.
        self.votes = registry.counter("realtime_votes_total", "Votes cast.")
        if hub is not None:
            self._read_hub(hub)
        registry.gauge_function(
            "process_resident_memory_bytes", "Resident memory size in bytes.", read_rss_bytes)

    def _read_hub(self, hub: Hub) -> None:
        registry = self.registry
        registry.counter_function(
            "realtime_messages_published_total", "Messages published to topics.",
            lambda: hub.published)
        registry.counter_function(
            "realtime_messages_sent_total", "Frames written to WebSocket connections.",
            lambda: hub.sent)
        registry.counter_function(
            "realtime_slow_consumers_dropped_total",
            "Connections closed with 1008 for not reading their messages.",
            lambda: hub.dropped)
        registry.gauge_function(
            "realtime_topics", "Topics with at least one local subscriber.",
            hub.topic_count)
        registry.gauge_function(
            "realtime_broker_up", "1 while the broker can deliver, else 0.",
            lambda: 1.0 if hub.broker.healthy() else 0.0)
