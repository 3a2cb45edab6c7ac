"""The daemon's own instruments (issue 11): what only the running process can measure.

``s1mpled metrics`` derives most metrics from the status document; REST latency and errors by
endpoint, the exchange's rate-limit weight, the clock offset to the exchange, state-save latency and
state sizes, and the streams' reconnects, health and message age exist only inside the daemon. They
are kept here, in one prometheus_client registry per operation (never a hand-written exposition),
and leave the process two ways: the control socket's ``metrics`` command (``s1mpled metrics``
merges them into node_exporter's textfile) and, if configured, a localhost HTTP endpoint
(:class:`MetricsServer`).

The pure cores never see this module: the environment, the store and the connection monitor hand
it facts (a request took this long, a save wrote this many bytes, a stream reconnected), and the
streams' state is read from their :class:`~s1mpled.connection.Link` facts at scrape time. Nothing
here may fail a trade: every observation is a counter bump or a gauge set.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from s1mpled.errors import ExchangeError
from s1mpled.events import ReconciliationCompleted, TradeExecuted
from s1mpled.workers import MonitorWorker, Subscription

__all__ = [
    "INSTRUMENT_NAMES",
    "ClockWatch",
    "EventTally",
    "Instruments",
    "MetricsServer",
    "StreamFacts",
    "endpoint_of",
]

log = logging.getLogger("s1mpled.instruments")
# no ``*_created`` series: they would double the output, and no dashboard reads them
disable_created_metrics()  # type: ignore[no-untyped-call]

MAX_ENDPOINTS = 64  # distinct endpoint labels; more (a path with an id in it) are counted as "other"
REST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAVE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
WEIGHT_HEADER = "x-mbx-used-weight-"  # Binance: X-MBX-USED-WEIGHT-1M (and -1S, -1H, ... when limited so)

# Every sample name these instruments export (the Grafana test checks the dashboard against them).
INSTRUMENT_NAMES = frozenset(
    {
        *(f"s1mpled_rest_request_duration_seconds{s}" for s in ("_bucket", "_count", "_sum")),
        "s1mpled_rest_errors_total",
        "s1mpled_rate_limit_weight_used",
        "s1mpled_exchange_clock_offset_seconds",
        *(f"s1mpled_state_save_duration_seconds{s}" for s in ("_bucket", "_count", "_sum")),
        "s1mpled_state_size_bytes",
        "s1mpled_stream_reconnects_total",
        "s1mpled_stream_up",
        "s1mpled_stream_failures",
        "s1mpled_stream_last_message_age_seconds",
        "s1mpled_fills_total",
        "s1mpled_reconciliation_corrections_total",
    }
)


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """One supervised stream as a scrape sees it (read from its Link; ages in seconds)."""

    name: str
    connected: bool
    failures: int  # consecutive failed attempts
    last_message_age_s: float | None  # None: nothing received on it yet


def endpoint_of(method: str, url: str) -> str:
    """``GET /api/v3/openOrders``: the request's method and path, never its query (ids, signatures)."""
    return f"{method.upper()} {urlsplit(url).path or '/'}"


def used_weights(headers: Mapping[str, Any] | None) -> dict[str, int]:
    """The rate-limit weights an answer reports, by interval (``{"1m": 23}``); garbage is ignored."""
    out: dict[str, int] = {}
    for key, value in (headers or {}).items():
        name = str(key).lower()
        if name.startswith(WEIGHT_HEADER) and str(value).strip().isdigit():
            out[name.removeprefix(WEIGHT_HEADER)] = int(str(value).strip())
    return out


class Instruments:
    """The registry of one operation and every instrument in it (see the module docstring)."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.registry = CollectorRegistry()
        labels, r = ("operation",), self.registry
        self._rest_seconds = Histogram(
            "s1mpled_rest_request_duration_seconds", "REST request latency to the exchange, by endpoint",
            (*labels, "endpoint"), buckets=REST_BUCKETS, registry=r,
        )  # fmt: skip
        self._rest_errors = Counter(
            "s1mpled_rest_errors", "REST requests that failed, by endpoint and error class",
            (*labels, "endpoint", "error"), registry=r,
        )  # fmt: skip
        self._weight = Gauge(
            "s1mpled_rate_limit_weight_used", "the exchange's request weight used in the current interval "
            "(Binance's X-MBX-USED-WEIGHT-* of the last answer)", (*labels, "interval"), registry=r,
        )  # fmt: skip
        self._clock = Gauge(
            "s1mpled_exchange_clock_offset_seconds", "the exchange's clock minus ours (measured once per "
            "reconciliation; Binance refuses signed requests beyond its recvWindow)", labels, registry=r,
        )  # fmt: skip
        self._save_seconds = Histogram(
            "s1mpled_state_save_duration_seconds", "time to write one state durably (journal, fsync, renames, "
            "directory fsync), by state file", (*labels, "file"), buckets=SAVE_BUCKETS, registry=r,
        )  # fmt: skip
        self._state_bytes = Gauge(
            "s1mpled_state_size_bytes", "size of the last saved record, by state file", (*labels, "file"), registry=r
        )
        self._fills = Counter(
            "s1mpled_fills", "fills the exchange pushed on the user stream (paper: the simulated exchange), by symbol",
            (*labels, "symbol"), registry=r,
        )  # fmt: skip
        self._corrections = Counter(
            "s1mpled_reconciliation_corrections", "corrections reconciliation applied since the daemon started, by "
            "kind (AdoptOrder, ApplyFill: a fill the stream missed, SettleOrder, SetHoldings, SetCapital)",
            (*labels, "kind"), registry=r,
        )  # fmt: skip
        self._endpoints: set[str] = set()
        self._lock = threading.Lock()  # saves are observed on the writer thread
        self.reconnects: Tally[str] = Tally()  # stream -> reconnections (ConnectionMonitor counts them)
        self._streams: Callable[[], Sequence[StreamFacts]] = tuple
        self._measure_clock: Callable[[], Awaitable[float]] | None = None
        r.register(_StreamCollector(self))

    # -- what the shells report --

    def _endpoint(self, endpoint: str) -> str:
        with self._lock:
            if endpoint in self._endpoints or len(self._endpoints) < MAX_ENDPOINTS:
                self._endpoints.add(endpoint)
                return endpoint
        return "other"

    def rest(self, endpoint: str, seconds: float, error: str | None, headers: Mapping[str, Any] | None) -> None:
        """One REST request ended (``error``: the exception's class name; ``headers``: the answer's, if any)."""
        label = self._endpoint(endpoint)
        self._rest_seconds.labels(self.operation, label).observe(seconds)
        if error is not None:
            self._rest_errors.labels(self.operation, label, error).inc()
        for interval, weight in used_weights(headers).items():
            self._weight.labels(self.operation, interval).set(weight)

    def state_saved(self, name: str, size: int, seconds: float) -> None:
        """A save of state file ``name`` is durable (the store's hook; called on its writer thread)."""
        self._save_seconds.labels(self.operation, name).observe(seconds)
        self._state_bytes.labels(self.operation, name).set(size)

    def reconnected(self, stream: str) -> None:
        """A stream connected again after a failure or a drop (the ConnectionMonitor saw CONNECTION_RESTORED)."""
        self.reconnects[stream] += 1

    def filled(self, symbol: str) -> None:
        """The stream delivered a fill (applied by its owner, or external: counted either way)."""
        self._fills.labels(self.operation, symbol).inc()

    def corrected(self, by_kind: Sequence[tuple[str, int]]) -> None:
        """A reconciliation pass applied these corrections (kind, count)."""
        for kind, count in by_kind:
            self._corrections.labels(self.operation, kind).inc(count)

    def clock_offset(self, seconds: float) -> None:
        self._clock.labels(self.operation).set(seconds)

    # -- what the environment offers to be read --

    def watch_streams(self, facts: Callable[[], Sequence[StreamFacts]]) -> None:
        """Read the streams' state from ``facts`` at every scrape (the live environment's Links)."""
        self._streams = facts

    def watch_clock(self, measure: Callable[[], Awaitable[float]]) -> None:
        """``measure()`` asks the exchange for its time and returns the offset (run by :class:`ClockWatch`)."""
        self._measure_clock = measure

    async def measure_clock(self) -> None:
        """One clock measurement, if the environment has an exchange clock (paper has none)."""
        if self._measure_clock is not None:
            self.clock_offset(await self._measure_clock())

    def streams(self) -> Sequence[StreamFacts]:
        return self._streams()

    def exposition(self) -> str:
        """The registry in Prometheus' text format (what the ``metrics`` command and the HTTP port serve)."""
        return generate_latest(self.registry).decode()


class _StreamCollector(Collector):
    """The streams' health, failures, message age and reconnects, read from their facts at scrape time."""

    def __init__(self, instruments: Instruments) -> None:
        self._i = instruments

    def collect(self) -> Iterator[Metric]:
        op, facts = self._i.operation, list(self._i.streams())
        labels = ["operation", "stream"]
        up = GaugeMetricFamily("s1mpled_stream_up", "1 while the stream is connected", labels=labels)
        failures = GaugeMetricFamily(
            "s1mpled_stream_failures", "consecutive failed connection attempts of the stream", labels=labels
        )
        age = GaugeMetricFamily(
            "s1mpled_stream_last_message_age_seconds", "seconds since the stream last delivered data", labels=labels
        )
        reconnects = CounterMetricFamily(
            "s1mpled_stream_reconnects", "reconnections of the stream since the daemon started", labels=labels
        )
        counted = dict(self._i.reconnects)
        for f in facts:
            up.add_metric([op, f.name], 1 if f.connected else 0)
            failures.add_metric([op, f.name], f.failures)
            if f.last_message_age_s is not None:
                age.add_metric([op, f.name], f.last_message_age_s)
        for name in sorted({f.name for f in facts} | set(counted)):
            reconnects.add_metric([op, name], counted.get(name, 0))
        yield from (up, failures, age, reconnects)


class ClockWatch(MonitorWorker):
    """After every reconciliation pass, one look at the exchange's clock (``/api/v3/time``, weight 1):
    at most one request per pass, never one per fill. A failed look leaves the last offset standing."""

    name = "clock-watch"

    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments

    def subscriptions(self) -> Sequence[Subscription]:
        return [Subscription(ReconciliationCompleted, self.on_reconciled)]

    async def on_reconciled(self, event: ReconciliationCompleted) -> None:
        try:
            await self._instruments.measure_clock()
        except ExchangeError as exc:
            log.debug("clock offset not measured: %s", exc)


class EventTally(MonitorWorker):
    """Counts what the bus carries for the metrics: every pushed fill (an observer: it sees the fills of every
    strategy, and external ones) and every pass's corrections by kind. Both modes; it never answers back."""

    name = "event-tally"

    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments

    def subscriptions(self) -> Sequence[Subscription]:
        return [
            Subscription(TradeExecuted, self.on_fill),
            Subscription(ReconciliationCompleted, self.on_reconciled),
        ]

    def on_fill(self, event: TradeExecuted) -> None:
        self._instruments.filled(event.fill.symbol)

    def on_reconciled(self, event: ReconciliationCompleted) -> None:
        self._instruments.corrected(event.by_kind)


class MetricsServer:
    """The optional localhost HTTP endpoint (``metrics: {listen: ...}``): prometheus_client's own server
    in a daemon thread, serving the operation's registry; stopped (and its port released) on shutdown."""

    def __init__(self, instruments: Instruments, host: str, port: int) -> None:
        self._instruments, self.host, self.port = instruments, host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; OSError if the address cannot be bound (the caller decides what that means)."""
        self._server, self._thread = start_http_server(self.port, self.host, registry=self._instruments.registry)
        self.port = int(self._server.server_address[1])  # port 0: the one the kernel chose
        log.info("metrics served on http://%s:%d/metrics", self.host, self.port, extra={"EVENT": "METRICS_HTTP"})

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
