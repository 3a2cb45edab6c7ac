"""The control socket's commands: ``status``, ``reconcile``, ``halt``, ``resume``.

``status`` answers in every phase (an operator wants to know *why* a daemon is not ready yet: what
the start waits for, since when, the next try); ``halt`` and ``resume`` work as soon as recovery step A
has loaded the breaker (a halt before trading begins keeps the strategies from ever starting to buy);
``reconcile`` needs a trading operation and runs through the daemon's own ReconciliationMonitor -- the
systemd timer uses this, so there is never a second writer of the state.

The commands see the operation through :class:`OperationView`, a narrow read-only Protocol (the
Operation satisfies it; this module does not import s1mpled.operation). Their text for a terminal is
in s1mpled.render.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from s1mpled.control import Handler
from s1mpled.errors import ControlError
from s1mpled.failpoints import failpoint
from s1mpled.receipts import receipts_doc
from s1mpled.reconciliation import Report
from s1mpled.strategy_worker import StrategyWorker

if TYPE_CHECKING:
    from s1mpled.assembly import Components
    from s1mpled.config import Config
    from s1mpled.startup import Waiting

__all__ = ["ControlCommands", "OperationView"]


class OperationView(Protocol):
    """What the control commands read of a running operation (they act only through its components)."""

    @property
    def config(self) -> Config: ...

    @property
    def phase(self) -> str: ...

    @property
    def waiting(self) -> Waiting | None: ...

    @property
    def components(self) -> Components | None: ...

    def now_ms(self) -> int: ...

    def steady_status(self) -> str: ...


def _worker_status(w: StrategyWorker) -> dict[str, Any]:
    snap = w.ledger.snapshot()
    return {
        "name": w.name,
        "symbol": w.symbol,
        "strategy": type(w.strategy).__name__,
        "trading": w.trading,
        "halted": w.halted,
        "last_price": w.last_price,
        "capital": snap.capital,
        "holdings": snap.holdings,
        "base": snap.base,
        "quote": snap.quote,
        "realized_pnl": snap.realized_pnl,
        "fees_paid": snap.fees_paid,
        "state_generation": w.state_file.generation,
        "open_orders": [
            {
                "client_order_id": o.client_order_id,
                "side": o.side,
                "type": o.type,
                "amount": o.amount,
                "price": o.price,
                "filled": o.filled,
                "state": o.state,
                "tag": o.tag,
            }
            for o in snap.open_orders
        ],
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "corrections": [{"strategy": c.strategy, "what": c.describe()} for c in report.corrections],
        "external_orders": [o.client_order_id for o in report.external_orders],
        "external_surplus": dict(report.external_surplus),
    }


class ControlCommands:
    """Binds the control-socket commands to a running operation."""

    def __init__(self, operation: OperationView) -> None:
        self._op = operation

    def handlers(self) -> Mapping[str, Handler]:
        return {"status": self.status, "reconcile": self.reconcile, "halt": self.halt, "resume": self.resume}

    def _running(self) -> Components:
        c = self._op.components
        if c is None or self._op.phase != "trading":
            raise ControlError(f"the operation is not trading yet (phase: {self._op.phase})")
        return c

    def _built(self) -> Components:
        c = self._op.components
        if c is None:
            raise ControlError(f"the operation has not loaded its state yet (phase: {self._op.phase})")
        return c

    async def status(self, args: Mapping[str, Any]) -> dict[str, Any]:
        failpoint("control.status")
        op, c = self._op, self._op.components
        doc: dict[str, Any] = {
            "operation": op.config.operation,
            "mode": op.config.mode,
            "phase": op.phase,
            "pid": os.getpid(),
            "summary": op.steady_status(),
            "state_dir": str(op.config.state_dir),
        }
        if op.waiting is not None:
            doc["waiting"] = op.waiting.to_doc(op.now_ms())
        if c is not None:
            b = c.breaker.breaker
            healthy = c.env.streams_healthy_for()
            doc["breaker"] = {
                "state": b.state,
                "reason": b.reason,
                "manual": b.manual,
                "opened_ms": b.opened_ms,
                "emergency_exit": b.exiting,  # the exit's goal is pending
                "streams_healthy_for_s": None if healthy is None else round(min(healthy, 1e9), 1),
            }
            doc["strategies"] = [_worker_status(w) for w in c.workers]
            doc["disk_full"] = any(w.disk_full for w in c.workers)  # no new orders until the state is written
            r = c.reconciler
            doc["last_reconciliation"] = {
                "at_ms": r.last_at_ms,
                "trigger": r.last_trigger,
                "passes": r.passes,
                "corrections": len(r.last_report.corrections) if r.last_report else None,
            }
            doc["receipts"] = receipts_doc(r.receipts)  # newest first: what each pass compared and saw
        return doc

    async def reconcile(self, args: Mapping[str, Any]) -> dict[str, Any]:
        report = await self._running().reconciler.reconcile("control")
        return report_dict(report)

    async def halt(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Open the breaker (manual: only ``resume`` closes it); ``keep_positions`` cancels a pending emergency exit."""
        reason = str(args.get("reason") or "operator halt")
        breaker = self._built().breaker
        await breaker.halt(reason, manual=True, keep_positions=bool(args.get("keep_positions")))
        return {"breaker": "open", "reason": reason, "emergency_exit": breaker.breaker.exiting}

    async def resume(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Close the breaker; a pending emergency exit is cancelled."""
        await self._built().breaker.resume("operator resume")
        return {"breaker": "closed"}
