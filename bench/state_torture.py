"""The state store's SIGKILL torture at benchmark scale (10,000 kills by default).

The normal test run kills the writer 1,000 times (tests/test_state_torture.py); this runs the very same
test with S1MPLED_TORTURE_KILLS raised and reports how long it took. It is a benchmark because of its
length, not its speed: the result that matters is "passed".

    python bench/state_torture.py [--kills 10000] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261121)
    args = parser.parse_args(argv)
    env = dict(os.environ, S1MPLED_TORTURE_KILLS=str(args.kills), S1MPLED_TORTURE_SEED=str(args.seed))
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_state_torture.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    verdict = "passed" if result.returncode == 0 else "FAILED"
    print("| kills | seed | result | wall time (s) | kills/s |")
    print("|---:|---:|---|---:|---:|")
    print(f"| {args.kills:,} | {args.seed} | {verdict} | {elapsed:.1f} | {args.kills / elapsed:.0f} |")
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
