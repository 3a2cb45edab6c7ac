"""Prometheus metrics, as node_exporter's textfile collector reads them (the Debian way for a daemon
that does not listen): ``/var/lib/prometheus/node-exporter/s1mpled-<operation>.prom``.

The metrics are derived from the same document ``s1mpled status --json`` answers, so what an
operator sees in Grafana is exactly what the control socket says, with no second bookkeeping inside
the trading path. The exposition format is prometheus_client's (never written by hand); the file is
replaced atomically (``write_to_textfile``: a temporary file, then rename), so the collector never
reads half a file. Amounts become floats here -- fine for charts, never fed back into trading.

What only the running process can measure (REST latency and errors, rate-limit weight, clock offset,
state saves, the streams) comes from the daemon's own registry (s1mpled.instruments) through the
control socket's ``metrics`` command: its exposition is parsed back into metric families and written
into the same file, from one registry, in one atomic replace. A daemon too old to know the command
still gets its status-derived metrics written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from s1mpled.instruments import INSTRUMENT_NAMES

if TYPE_CHECKING:
    from s1mpled.config import Config

__all__ = ["METRIC_NAMES", "TEXTFILE_DIR", "default_textfile", "export", "registry_of", "write_textfile"]

_OP = ("operation",)
REASON_CHARS = 120  # a breaker reason names a stream or an operator's words: bounded, one series at a time
_STRATEGY = ("operation", "strategy", "symbol")
_ASSET = ("operation", "strategy", "asset")

# name -> (help, labels); every name the daemon exports (the Grafana dashboard test checks against it)
_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "s1mpled_up": ("1 while the daemon answers (written by the daemon itself)", _OP),
    "s1mpled_phase": ("1 for the daemon's current phase (loading-state, reconciling, trading, ...)", (*_OP, "phase")),
    "s1mpled_breaker_open": ("1 while the circuit breaker is open (no new orders)", _OP),
    "s1mpled_breaker_manual": ("1 while an operator's halt or a split-brain fence holds the breaker", _OP),
    "s1mpled_breaker_reason": ("1 while the breaker is open, labelled with why (first 120 chars)", (*_OP, "reason")),
    "s1mpled_emergency_exit_pending": ("1 while an emergency exit is being pursued", _OP),
    "s1mpled_streams_healthy_seconds": ("how long every stream has been healthy (absent while one is not)", _OP),
    "s1mpled_disk_full": ("1 while a state save waits for disk space (no new orders)", _OP),
    "s1mpled_reconciliation_last_timestamp_seconds": ("Unix time of the last successful reconciliation", _OP),
    "s1mpled_reconciliation_passes": ("reconciliation passes since the daemon started", _OP),
    "s1mpled_reconciliation_last_corrections": ("corrections the last reconciliation applied", _OP),
    "s1mpled_reconciliation_last_compared": (
        "what the last reconciliation compared, by kind (its receipt)",
        (*_OP, "what"),
    ),
    "s1mpled_reconciliation_last_consistent": (
        "1 if the last reconciliation's view held still (balances compared)",
        _OP,
    ),
    "s1mpled_strategy_trading": ("1 while the strategy may place orders", _STRATEGY),
    "s1mpled_strategy_capital": ("the strategy's free capital in its quote asset", _STRATEGY),
    "s1mpled_strategy_holdings": ("what the strategy holds of its base asset", _STRATEGY),
    "s1mpled_strategy_last_price": ("the last market price the strategy saw", _STRATEGY),
    "s1mpled_strategy_equity": ("capital + holdings at the last price, in the quote asset", _STRATEGY),
    "s1mpled_strategy_realized_pnl": ("realized profit and loss in the quote asset", _STRATEGY),
    "s1mpled_strategy_open_orders": ("the strategy's open orders", _STRATEGY),
    "s1mpled_strategy_orders": ("open orders by state (pending, open, unresolved...)", (*_STRATEGY, "state")),
    "s1mpled_strategy_fees_paid": ("fees paid, per asset charged", _ASSET),
    "s1mpled_strategy_state_generation": (
        "generation of the strategy's durable state (grows with every save)",
        _STRATEGY,
    ),
}
METRIC_NAMES = frozenset(_SPECS) | INSTRUMENT_NAMES


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(Decimal(str(value)))
    except ArithmeticError:
        return None


def registry_of(doc: Mapping[str, Any], *, up: bool = True) -> CollectorRegistry:
    """The metrics of one status document (``ControlCommands.status``); ``up=False``: the daemon did not
    answer, and ``doc`` only names the operation (the file then says so instead of keeping stale values)."""
    registry = CollectorRegistry()
    g = {name: Gauge(name, text, labels, registry=registry) for name, (text, labels) in _SPECS.items()}
    op = str(doc.get("operation", ""))
    g["s1mpled_up"].labels(op).set(1 if up else 0)
    if not up:
        return registry
    g["s1mpled_phase"].labels(op, str(doc.get("phase", ""))).set(1)
    g["s1mpled_disk_full"].labels(op).set(1 if doc.get("disk_full") else 0)
    breaker = doc.get("breaker")
    if breaker:
        g["s1mpled_breaker_open"].labels(op).set(1 if breaker.get("state") == "open" else 0)
        g["s1mpled_breaker_manual"].labels(op).set(1 if breaker.get("manual") else 0)
        if breaker.get("state") == "open":
            g["s1mpled_breaker_reason"].labels(op, str(breaker.get("reason") or "")[:REASON_CHARS]).set(1)
        g["s1mpled_emergency_exit_pending"].labels(op).set(1 if breaker.get("emergency_exit") else 0)
        healthy = _num(breaker.get("streams_healthy_for_s"))
        if healthy is not None:
            g["s1mpled_streams_healthy_seconds"].labels(op).set(healthy)
    rec = doc.get("last_reconciliation") or {}
    if isinstance(rec.get("at_ms"), int):
        g["s1mpled_reconciliation_last_timestamp_seconds"].labels(op).set(rec["at_ms"] / 1000)
    if isinstance(rec.get("passes"), int):
        g["s1mpled_reconciliation_passes"].labels(op).set(rec["passes"])
    if isinstance(rec.get("corrections"), int):
        g["s1mpled_reconciliation_last_corrections"].labels(op).set(rec["corrections"])
    receipts = doc.get("receipts") or []
    if receipts:
        last = receipts[0]  # newest first
        for what, count in (last.get("compared") or {}).items():
            g["s1mpled_reconciliation_last_compared"].labels(op, str(what)).set(count)
        g["s1mpled_reconciliation_last_consistent"].labels(op).set(1 if last.get("consistent") else 0)
    for s in doc.get("strategies") or []:
        _strategy(g, op, s)
    return registry


def _strategy(g: Mapping[str, Gauge], op: str, s: Mapping[str, Any]) -> None:
    labels = (op, str(s.get("name")), str(s.get("symbol")))
    g["s1mpled_strategy_trading"].labels(*labels).set(1 if s.get("trading") and not s.get("halted") else 0)
    g["s1mpled_strategy_open_orders"].labels(*labels).set(len(s.get("open_orders") or []))
    for state, count in Counter(str(o.get("state")) for o in s.get("open_orders") or []).items():
        g["s1mpled_strategy_orders"].labels(*labels, state).set(count)
    for key in ("capital", "holdings", "last_price", "realized_pnl", "state_generation"):
        value = _num(s.get(key))
        if value is not None:
            g[f"s1mpled_strategy_{key}"].labels(*labels).set(value)
    price, capital, holdings = (_dec(s.get(k)) for k in ("last_price", "capital", "holdings"))
    if price is not None and capital is not None and holdings is not None:
        g["s1mpled_strategy_equity"].labels(*labels).set(float(capital + holdings * price))
    fees = s.get("fees_paid")
    if isinstance(fees, Mapping):
        for asset, amount in fees.items():
            value = _num(amount)
            if value is not None:
                g["s1mpled_strategy_fees_paid"].labels(op, labels[1], str(asset)).set(value)
    elif (value := _num(fees)) is not None:
        g["s1mpled_strategy_fees_paid"].labels(op, labels[1], str(s.get("quote"))).set(value)


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(str(value))
    except ArithmeticError:
        return None
    return d if d.is_finite() else None


class _Exposition(Collector):
    """The daemon's own exposition text, parsed back into metric families (a malformed text raises
    ValueError here, before anything is written)."""

    def __init__(self, text: str) -> None:
        self._families = list(text_string_to_metric_families(text))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def write_textfile(path: str, doc: Mapping[str, Any], *, up: bool = True, instruments: str = "") -> None:
    """Replace ``path`` atomically with the metrics of ``doc`` and the daemon's own ``instruments`` (its
    exposition text): a temporary file in the same directory, then a rename, so node_exporter never reads
    half a file."""
    registry = registry_of(doc, up=up)
    if up and instruments:
        registry.register(_Exposition(instruments))
    write_to_textfile(path, registry)


def default_textfile(operation: str) -> str:
    """Debian's node_exporter textfile directory (prometheus-node-exporter's default)."""
    return f"{TEXTFILE_DIR}/s1mpled-{operation}.prom"


TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def export(config: Config, textfile: str | None, timeout_s: float) -> tuple[str, bool]:
    """``s1mpled metrics``: ask the daemon for its status and write the textfile; (path, daemon answered).

    A daemon that does not answer is written as ``s1mpled_up 0`` -- the collector then reports the
    outage instead of the last numbers forever.
    """
    import asyncio  # noqa: PLC0415 -- the command's edge; the mapping above stays pure

    from s1mpled.errors import ControlError  # noqa: PLC0415

    path = textfile or default_textfile(config.operation)
    try:
        doc, text = asyncio.run(_ask(config, timeout_s))
    except ControlError:
        write_textfile(path, {"operation": config.operation}, up=False)
        return path, False
    write_textfile(path, doc, instruments=text)
    return path, True


async def _ask(config: Config, timeout_s: float) -> tuple[Any, str]:
    """The daemon's status document and its instruments' exposition ("" from a daemon without the command)."""
    from s1mpled.control import request  # noqa: PLC0415
    from s1mpled.errors import ControlError  # noqa: PLC0415

    doc = await request(config.control_socket, "status", {}, timeout_s=timeout_s)
    try:
        answer = await request(config.control_socket, "metrics", {}, timeout_s=timeout_s)
    except ControlError as exc:
        if "unknown command" not in str(exc):
            raise
        return doc, ""
    text = answer.get("text") if isinstance(answer, dict) else None
    return doc, text if isinstance(text, str) else ""
