"""`make bench`: every benchmark, printed for a person to compare.

    python -m bench [NAME ...]          the benchmarks named (all by default), at full size
    python -m bench --smoke [NAME ...]  each at a tiny size, under a minute in all (CI runs it)

A benchmark whose results are wrong (messages lost, nothing processed, a forward missing) fails,
as does one that raises; the others still run, and the exit status is 1 if any failed. Targets
are printed beside the numbers for a person to judge: missing one is not a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from bench import checkins, forward, gazetteer, geo, inbound, parser, scale

# name: (full size, tiny size)
BENCHES: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
    "parser": (parser.main, parser.smoke),
    "geo": (geo.main, geo.smoke),
    "inbound": (inbound.main, inbound.smoke),
    "forward": (forward.main, forward.smoke),
    "checkins": (checkins.main, checkins.smoke),
    "gazetteer": (gazetteer.main, gazetteer.smoke),
    "scale": (scale.main, scale.smoke),
}
SMOKE_BUDGET = 60.0  # seconds, on a shared two-core machine


def run(names: Sequence[str], *, smoke: bool) -> int:
    """Run each benchmark, report each one's outcome and time; 1 if any failed."""
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        full, tiny = BENCHES[name]
        t0 = time.perf_counter()
        try:
            (tiny if smoke else full)()
        except Exception:
            sys.stdout.flush()
            traceback.print_exc()
            sys.stderr.flush()
            failed.append(name)
        outcome = "FAILED" if name in failed else "ok"
        print(f"[{name}: {outcome} in {time.perf_counter() - t0:.1f} s]")
        print(flush=True)
    total = time.perf_counter() - started
    mode = "smoke" if smoke else "bench"
    summary = f"{mode}: {len(names) - len(failed)} of {len(names)} benchmarks ok in {total:.1f} s"
    if failed:
        summary += f"; FAILED: {', '.join(failed)}"
    if smoke and total > SMOKE_BUDGET:
        summary += f" (over the {SMOKE_BUDGET:.0f} s budget: make a smoke size smaller)"
    print(summary)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="Kengele's benchmarks.")
    ap.add_argument("--smoke", action="store_true", help="every benchmark at a tiny size (CI)")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(BENCHES)}")
    args = ap.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHES)}")
    return run(args.names or list(BENCHES), smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
