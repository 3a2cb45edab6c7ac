"""Text for a terminal: what ``s1mpled status`` and ``s1mpled reconcile`` print (``--json`` prints the
documents as they come over the control socket, s1mpled.status)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_reconcile", "format_status"]


def _money(value: Any) -> str:
    """Amounts as exact plain decimals without trailing zeros ("0.39926762", not "0.399267620000000000")."""
    if value is None:
        return "-"
    text = str(value)
    if "." in text and "e" not in text.lower():
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def format_status(doc: Mapping[str, Any]) -> str:
    """The human-readable `s1mpled status`."""
    lines = [f"s1mpled {doc['operation']} ({doc['mode']}), pid {doc['pid']}: {doc['summary']}"]
    if doc.get("disk_full"):
        lines.append(f"DISK FULL: no new orders until space is freed in {doc['state_dir']} (saves are retried)")
    waiting = doc.get("waiting")
    if waiting:
        lines.append(f"not trading: {waiting['text']} (last: {waiting['last_error'] or '-'})")
    breaker = doc.get("breaker")
    if breaker:
        extra = f" ({breaker['reason']})" if breaker["state"] == "open" else ""
        if breaker.get("emergency_exit"):
            extra += "; emergency exit in progress (`s1mpled halt --keep-positions` or `resume` cancels it)"
        lines.append(f"circuit breaker: {breaker['state']}{extra}")
    rec = doc.get("last_reconciliation")
    if rec:
        lines.append(f"reconciliations: {rec['passes']}, last by {rec['trigger']}, {rec['corrections']} correction(s)")
    receipts = doc.get("receipts") or []
    if receipts:
        r, c = receipts[0], receipts[0]["compared"]
        view = "a consistent view" if r["consistent"] else "a moving view (balances not compared)"
        lines.append(
            f"last receipt: {c['open_orders']} open orders, {c['probed']} probed, {c['trades']} trades, "
            f"{c['balances']} balances from {view}; sha256 {r['venue_sha256'][:16]}"
        )
    for s in doc.get("strategies", []):
        lines.append(
            f"  {s['name']:<12} {s['strategy']:<6} {s['symbol']:<10} price {_money(s['last_price'])}  "
            f"capital {_money(s['capital'])} {s['quote']}  holdings {_money(s['holdings'])} {s['base']}  "
            f"pnl {_money(s['realized_pnl'])}  open orders {len(s['open_orders'])}"
        )
        for o in s["open_orders"]:
            lines.append(
                f"      {o['client_order_id']} {o['side']} {o['type']} {o['amount']} @ {_money(o['price'])} "
                f"filled {o['filled']} {o['state']} {o['tag']}"
            )
    return "\n".join(lines)


def format_reconcile(report: Mapping[str, Any]) -> str:
    """The human-readable `s1mpled reconcile`."""
    corrections = report["corrections"]
    lines = [f"reconciliation done: {len(corrections)} correction(s)"]
    for c in corrections:
        lines.append(f"  {c['strategy']}: {c['what']}")
    for cid in report["external_orders"]:
        lines.append(f"  external order (not ours, not touched): {cid}")
    return "\n".join(lines)
