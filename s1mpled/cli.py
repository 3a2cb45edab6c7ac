"""The ``s1mpled`` command line: one entry point for the daemon and for the operator's tools.

Every S1mpledError becomes one line on stderr and its exit code (78 for configuration errors, so
systemd's RestartPreventExitStatus=78 stops a restart loop); anything else is a bug and gets a
traceback and exit 70.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from s1mpled import __version__
from s1mpled.errors import EX_SOFTWARE, S1mpledError

__all__ = ["main"]

EX_DATAERR = 65  # `state verify`: the file is not a verified state

Command = Callable[[argparse.Namespace], int]


def _cmd_state_verify(args: argparse.Namespace) -> int:
    from s1mpled.state.inspect import inspect

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s1mpled", description="S1mpleTrader operations daemon")
    parser.add_argument("--version", action="version", version=f"s1mpled {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
    except Exception:  # a bug: show everything, exit like a crashed daemon so systemd restarts it
        import traceback

        traceback.print_exc()
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
