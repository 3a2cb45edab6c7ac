"""The ``s1mpled`` command line: one entry point for the daemon and for the operator's tools.

Every S1mpledError becomes one line on stderr and its exit code (78 for configuration errors, so
systemd's RestartPreventExitStatus=78 stops a restart loop); anything else is a bug and gets a
traceback and exit 70.

``run`` says why it stopped through the log instead, at CRITICAL: under systemd that one line reaches
the journal with PRIORITY=2 (``journalctl -u s1mpled -p err`` answers "why is it down"), with the
daemon's fields; in a terminal it is the last log line on stderr, with its time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from s1mpled import __version__
from s1mpled.clock import wall_ms
from s1mpled.errors import EX_SOFTWARE, S1mpledError

if TYPE_CHECKING:
    from s1mpled.config import Config

__all__ = ["main"]

EX_DATAERR = 65  # `state verify`: the file is not a verified state

Command = Callable[[argparse.Namespace], int]


def _cmd_state_verify(args: argparse.Namespace) -> int:
    from s1mpled.state.dirlog import LOG_NAME
    from s1mpled.state.inspect import inspect, inspect_log

    if os.path.basename(args.path) == LOG_NAME:
        parsed = inspect_log(args.path)
        states = ", ".join(f"{name} {len(es)}" for name, es in sorted(parsed.entries.items())) or "none"
        print(f"{args.path}: OK record log, {parsed.records} records, {parsed.valid_length} bytes; entries: {states}")
        if parsed.torn_bytes:
            print(f"  note: a torn last record of {parsed.torn_bytes} bytes ({parsed.torn_why}): never acknowledged")
        return 0
    found = inspect(args.path)
    rec, plan = found.record, found.plan
    print(f"{found.path}: OK generation {rec.generation}, {rec.length} payload bytes, sha256 {rec.checksum}")
    if plan.error:
        print(f"load() would refuse: {plan.error}")
    else:
        print(f"load() would use {plan.load_from} (generation {plan.generation})")
    for message in plan.messages:
        print(f"  note: {message}")
    return 0


def _cmd_state_show(args: argparse.Namespace) -> int:
    from s1mpled.state.inspect import inspect, to_display_json

    print(to_display_json(inspect(args.path)))
    return 0


def _config(args: argparse.Namespace) -> Config:
    from s1mpled.config import load_config, resolve_config_path

    return load_config(resolve_config_path(args.config, os.environ))


_STOP_MEANING = {
    78: "a configuration error: systemd does not restart it until the configuration is fixed",
    75: "temporary: systemd restarts it unless it was being stopped",
    70: "systemd restarts it, and recovery reloads the state from disk",
}


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from s1mpled.logs import setup_logging

    setup_logging()  # before the configuration is read: an error in it is logged like every other stop
    log = logging.getLogger("s1mpled.cli")
    try:
        config = _config(args)
        setup_logging(config.log_level, operation=config.operation)
        from s1mpled.operation import run

        asyncio.run(run(config))
    except S1mpledError as exc:
        code = exc.exit_code
        meaning = _STOP_MEANING.get(code, "")
        log.critical(
            "s1mpled stopped: %s (exit %d%s)", exc, code, f", {meaning}" if meaning else "",
            extra={"EVENT": "STOPPED"},
        )  # fmt: skip
        return code
    except Exception as exc:  # a bug: the traceback goes with the one line, in one journal entry
        log.critical(
            "s1mpled stopped by a bug: %r (exit %d, %s)", exc, EX_SOFTWARE, _STOP_MEANING[EX_SOFTWARE],
            exc_info=True, extra={"EVENT": "STOPPED"},
        )  # fmt: skip
        return EX_SOFTWARE
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from s1mpled.assembly import build_strategy
    from s1mpled.credentials import check_credentials

    config = _config(args)
    for strategy in config.strategies:
        build_strategy(strategy, config.schedule)
    key_file = None
    if config.mode == "live" and config.live is not None:  # `run` would need it: check it now, not at start
        key_file = check_credentials(config.live.credentials, str(config.path), os.environ)
    names = ", ".join(s.name for s in config.strategies)
    print(f"{config.path}: OK ({config.mode} mode, operation {config.operation}, strategies: {names})")
    print(f"state directory: {config.state_dir}; control socket: {config.control_socket}")
    if key_file is not None:
        print(f"credentials: {key_file}: OK (api_key and secret present)")
    return 0


def _control(args: argparse.Namespace, cmd: str, payload: dict[str, Any] | None = None) -> Any:
    """Ask the running daemon; only the socket's place is read of the configuration, so a config an edit
    has just broken elsewhere (a strategy's params, the credentials) still lets the operator halt it."""
    import asyncio

    from s1mpled.config import resolve_config_path, resolve_control_socket
    from s1mpled.control import request

    socket = resolve_control_socket(resolve_config_path(args.config, os.environ), os.environ)
    return asyncio.run(request(socket, cmd, payload, timeout_s=args.timeout))


def _cmd_metrics(args: argparse.Namespace) -> int:
    """What s1mpled-metrics.timer runs: 0 when the daemon answered, 1 when the file says it is down."""
    from s1mpled import metrics

    path, answered = metrics.export(_config(args), args.textfile, args.timeout)
    print(f"{path}: {'written' if answered else 'written with s1mpled_up 0: the daemon did not answer'}")
    return 0 if answered else 1


def _cmd_doctor(args: argparse.Namespace) -> int:
    from s1mpled import doctor

    findings = doctor.run_doctor(_config(args), args.unit or ["s1mpled.service", "s1mpled-reconcile.timer"])
    print(json.dumps(doctor.as_json(findings), indent=2) if args.json else doctor.format_findings(findings))
    return doctor.exit_code(findings)


def _cmd_status(args: argparse.Namespace) -> int:
    from s1mpled.render import format_status

    if args.all:
        return _status_all(args)
    doc = _control(args, "status")
    print(json.dumps(doc, indent=2) if args.json else format_status(doc))
    return 0


def _status_all(args: argparse.Namespace) -> int:
    """Every instance on the host; 0 when every one of them answered, 1 if one is down or silent."""
    from s1mpled import fleet

    instances = fleet.gather(min(args.timeout, 10.0))
    if args.json:
        print(json.dumps([dataclasses.asdict(i) for i in instances], indent=2, default=str))
    else:
        print(fleet.format_fleet(instances, wall_ms()))
    return 0 if instances and all(i.status is not None for i in instances) else 1


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from s1mpled.render import format_reconcile

    report = _control(args, "reconcile")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(format_reconcile(report))
    return 0


def _cmd_halt(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"reason": args.reason} if args.reason else {}
    if args.keep_positions:
        payload["keep_positions"] = True
    result = _control(args, "halt", payload or None)
    print(f"circuit breaker open: {result['reason']} (new signals halted; `s1mpled resume` to trade again)")
    if result.get("emergency_exit"):
        print("the emergency exit goes on (`s1mpled halt --keep-positions` keeps what the strategies hold)")
    elif args.keep_positions:
        print("no emergency exit: the strategies keep what they hold")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    _control(args, "resume")
    print("circuit breaker closed: trading resumes (a pending emergency exit is cancelled)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """The live web page: a process of its own, a client of the instances' control sockets."""
    from s1mpled.dashboard.server import main as dashboard

    return dashboard(args.socket or [], args.config or [], args.listen, args.token_file, args.snapshot_every)


def _add_dashboard(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dashboard", help="serve the live read-only web page of every instance (127.0.0.1:8787 by default)"
    )
    p.add_argument("--config", action="append", help="an instance's configuration (repeatable; default: all)")
    p.add_argument("--socket", action="append", help="an instance's control socket (repeatable)")
    p.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT to serve on (default 127.0.0.1:8787)")
    p.add_argument("--token-file", help="require this token (default: the credential dashboard_token, if any)")
    p.add_argument("--snapshot-every", type=float, default=5.0, help="seconds between status snapshots (default 5)")
    p.set_defaults(func=_cmd_dashboard)


def _cmd_alert(args: argparse.Namespace) -> int:
    """Send a critical alert (what systemd's OnFailure= unit runs after a restart storm)."""
    import asyncio
    from pathlib import Path

    from s1mpled.alerts import Alerter
    from s1mpled.config import load_config, resolve_config_path
    from s1mpled.errors import ConfigError
    from s1mpled.logs import setup_logging

    config_path = args.config
    if config_path is None and args.unit and args.unit.startswith("s1mpled@"):
        instance = Path("/etc/s1mpled") / (args.unit.removeprefix("s1mpled@").removesuffix(".service") + ".yaml")
        config_path = str(instance) if instance.exists() else None
    message = args.message or f"{args.unit or 's1mpled'} failed and is not being restarted: trading is stopped"
    try:
        config = load_config(resolve_config_path(config_path, os.environ))
    except ConfigError as exc:  # the failure may be this very config: alert through the journal at least
        setup_logging("info")
        Alerter(()).log_only(f"{message} (configuration error: {exc})")
        return 0
    setup_logging(config.log_level, operation=config.operation)
    alerter = Alerter(config.alerts.apprise_urls)
    delivered = asyncio.run(alerter.send(message))
    print(f"alert sent to the journal{' and ' + str(len(alerter.urls)) + ' URL(s)' if alerter.urls else ''}: {message}")
    return 0 if delivered else 1


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="configuration file (default: $S1MPLED_CONFIG, then /etc/s1mpled/s1mpled.yaml)")


def _add_control(sub: Any, name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    _add_config(p)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the daemon (default 120)")
    p.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    p.set_defaults(func=func)
    return p


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s1mpled", description="S1mpleTrader operations daemon")
    parser.add_argument("--version", action="version", version=f"s1mpled {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operation in the foreground (what the systemd unit starts)")
    _add_config(run)
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("check-config", help="validate the configuration; exit 78 with file:line and why if bad")
    _add_config(check)
    check.set_defaults(func=_cmd_check_config)
    metrics = sub.add_parser(
        "metrics", help="write the daemon's Prometheus metrics for node_exporter's textfile collector"
    )
    _add_config(metrics)
    metrics.add_argument(
        "--textfile", help="the file to replace (default /var/lib/prometheus/node-exporter/s1mpled-OPERATION.prom)"
    )
    metrics.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the daemon (default 20)")
    metrics.set_defaults(func=_cmd_metrics)
    doc = sub.add_parser(
        "doctor", help="check what breaks deployments (clock, state, key, exchange, units); 1 if a check fails"
    )
    _add_config(doc)
    doc.add_argument(
        "--unit", action="append", help="a unit to check (repeatable; default s1mpled.service and the timer)"
    )
    doc.add_argument("--json", action="store_true", help="the findings as JSON")
    doc.set_defaults(func=_cmd_doctor)
    status = _add_control(sub, "status", _cmd_status, "show phase, strategies, holdings, open orders, breaker")
    status.add_argument(
        "--all", action="store_true", help="every instance on this host (s1mpled and each s1mpled@NAME), one table"
    )
    _add_control(sub, "reconcile", _cmd_reconcile, "reconcile with the exchange now and print the report")
    halt = _add_control(sub, "halt", _cmd_halt, "open the circuit breaker: no new orders until resume")
    halt.add_argument("--reason", help="why (shown in status and alerts)")
    halt.add_argument(
        "--keep-positions",
        action="store_true",
        help="also cancel a pending emergency exit: the strategies keep what they hold",
    )
    _add_control(sub, "resume", _cmd_resume, "close the circuit breaker: trading resumes")
    alert = sub.add_parser("alert", help="send a critical alert to the journal and the configured Apprise URLs")
    _add_config(alert)
    alert.add_argument("--unit", help="the systemd unit that failed (OnFailure=s1mpled-alert@%%n.service)")
    alert.add_argument("--message", help="the alert text (default: says the unit failed)")
    alert.set_defaults(func=_cmd_alert)
    _add_dashboard(sub)

    state = sub.add_parser("state", help="inspect durable state files (read-only, safe next to a running daemon)")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    verify = state_sub.add_parser("verify", help="verify a state file; exit 0 if intact, 65 with the reason if not")
    verify.add_argument("path")
    verify.set_defaults(func=_cmd_state_verify)
    show = state_sub.add_parser("show", help="print a verified state file as JSON with its generation and checksum")
    show.add_argument("path")
    show.set_defaults(func=_cmd_state_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except S1mpledError as exc:
        code = EX_DATAERR if args.command == "state" else exc.exit_code
        print(f"s1mpled: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `s1mpled state show X | head`: the reader left, which is not our error
        sys.stderr.close()
        return 0
    except Exception:  # a bug: show everything, exit like a crashed daemon so systemd restarts it
        import traceback

        traceback.print_exc()
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
