"""The server's Prometheus metrics, on ``prometheus_client``.

Each application has its own ``CollectorRegistry`` (tests build a fresh app each time), with
the process collectors (``process_*``: resident memory, CPU, open descriptors) and the
Python ones (``python_gc_*``, ``python_info``) beside this server's families. The hub's own
counters are read at scrape time by a collector, so the hub does not know this module::

    metrics = ServerMetrics(CollectorRegistry(), hub)
    metrics.connections.labels(endpoint="ws_echo").inc()
    body, content_type = render(metrics.registry, accept_header)
"""

from typing import Any, Iterable, Optional

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector,
    ProcessCollector, disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from realtime.ops import looplag
from realtime.pubsub.hub import Hub

# A `*_created` timestamp beside every counter doubles the series for nothing a dashboard of
# this server uses; Prometheus itself does not need it.
disable_created_metrics()


def render(registry: CollectorRegistry, accept: Optional[str]) -> tuple[bytes, str]:
    """Every metric of ``registry`` in the format the scraper's ``Accept`` header asks for
    (the Prometheus text format, or OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class HubCollector(Collector):
    """The hub's counters and its broker's state, read at every scrape."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield CounterMetricFamily(
            "realtime_messages_published", "Messages published to topics.", hub.published)
        yield CounterMetricFamily(
            "realtime_messages_sent", "Frames written to WebSocket connections.", hub.sent)
        yield CounterMetricFamily(
            "realtime_slow_consumers_dropped",
            "Connections closed with 1008 for not reading their messages.", hub.dropped)
        yield GaugeMetricFamily(
            "realtime_topics", "Topics with at least one local subscriber.", hub.topic_count())
        yield GaugeMetricFamily(
            "realtime_broker_up", "1 while the broker can deliver, else 0.",
            1.0 if hub.broker.healthy() else 0.0)
        # A networked broker's own counters, whatever they are (RedisBroker.stats).
        for name, value in (getattr(hub.broker, "stats", None) or {}).items():
            yield CounterMetricFamily(
                f"realtime_broker_{name}", f"Broker counter: {name} (see docs/protocol.md).", value)


class ChatCollector(Collector):
    """The chat state's health and, for a shared one, its counters (``stats``)."""

    def __init__(self, chat: Any) -> None:
        self.chat = chat

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "realtime_chat_state_up", "1 while the chat state is shared as configured "
            "(always for the embedded one), else 0.", 1.0 if self.chat.healthy() else 0.0)
        for name, value in (getattr(self.chat, "stats", None) or {}).items():
            yield CounterMetricFamily(
                f"realtime_chat_{name}", f"Chat state counter: {name} (see docs/protocol.md).",
                value)


class ServerMetrics:
    """The families this server exports, in one place so every name is listed once.

    Sockets update them through ``SocketHandler``; endpoint code uses its own family here
    (``votes``).

    Args:
        registry: where the families live; ``GET /metrics`` renders it.
        hub: read at scrape time for published/sent/dropped/topics and the broker's state.
    """

    def __init__(self, registry: Optional[CollectorRegistry] = None,
                 hub: Optional[Hub] = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.connections = Gauge(
            "realtime_connections", "Open WebSocket connections by endpoint.", ["endpoint"],
            registry=registry)
        self.connections_total = Counter(
            "realtime_connections_opened", "WebSocket connections opened by endpoint.",
            ["endpoint"], registry=registry)
        self.refused = Counter(
            "realtime_connections_refused",
            "WebSocket handshakes refused, by reason (origin, ip_limit).", ["reason"],
            registry=registry)
        # Every refusal of every transport, by what refused it (realtime.limits.admission).
        self.refusals = Counter(
            "realtime_refusals", "Connections and long-poll sessions refused, by transport "
            "(websocket, sse, long_poll, long_poll_session, tcp) and reason (origin, ip_limit, "
            "handshake_rate).", ["transport", "reason"], registry=registry)
        self.messages_in = Counter(
            "realtime_messages_received", "Frames received from clients by endpoint.",
            ["endpoint"], registry=registry)
        self.errors = Counter(
            "realtime_errors", "Error frames sent to clients by error code.", ["code"],
            registry=registry)
        self.rate_limited = Counter(
            "realtime_rate_limited", "Frames refused for exceeding the rate limit.",
            ["endpoint"], registry=registry)
        self.internal_errors = Counter(
            "realtime_internal_errors", "Connections closed with 1011 after a server bug.",
            registry=registry)
        self.votes = Counter("realtime_votes", "Votes cast.", registry=registry)
        lag = Histogram(
            "realtime_event_loop_lag_seconds",
            "How much later than asked the event loop ran a callback (sampled every 50 ms).",
            buckets=looplag.BUCKETS, registry=registry)
        # Sampling starts with the server (serve()), or wherever a test calls start().
        self.loop_lag = looplag.LoopLag(observe=lag.observe)
        Gauge("realtime_event_loop_lag_max_seconds",
              "The longest event loop delay of the last minute.",
              registry=registry).set_function(self.loop_lag.worst)
        if hub is not None:
            registry.register(HubCollector(hub))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def watch_chat(self, chat: Any) -> None:
        """Export the chat state's health and counters (``ChatCollector``)."""
        self.registry.register(ChatCollector(chat))
