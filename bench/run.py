"""Run dirsync's benchmark: `.venv/bin/python bench/run.py [--scenarios S1,S2,S3,demo,Q1,Q2,Q3] [--small]`.

Prints the figures and a PASS/FAIL line per target of issues 5 and 14, writes them to bench/RESULTS.md (full
size only, unless --results names a file), and exits 1 when a judged target fails.
"""

from __future__ import annotations

import argparse
import compileall
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `bench`, `tests` and `dirsync_pipeline` importable

from bench.report import console, markdown  # noqa: E402
from bench.scenarios import FULL, SMALL, all_scenarios, run_scenarios  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    scenarios = all_scenarios()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(scenarios), help=f"comma-separated, from {', '.join(scenarios)}")
    parser.add_argument("--small", action="store_true", help="CI size: correctness and request counts, timings not judged")
    parser.add_argument("--results", type=Path, help="markdown file to write (default: bench/RESULTS.md at full size)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = sorted(set(names) - set(scenarios))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(scenarios)}")
    # Measure dirsync as installed, with its modules' bytecode cached: pip compiles a regular install, and an
    # editable one caches it on first import, unless PYTHONDONTWRITEBYTECODE is set (it is on the machine the
    # figures come from). Else every measured process would compile dirsync's source again (~0.1 s).
    compileall.compile_dir(REPO / "dirsync_pipeline", quiet=1)
    outcome = run_scenarios(names, SMALL if args.small else FULL)
    print(console(outcome))
    results = args.results or (None if args.small else REPO / "bench" / "RESULTS.md")
    if results:
        command = " ".join([".venv/bin/python bench/run.py", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
        results.write_text(markdown(outcome, command))
        print(f"\nwritten to {results}")
    return 1 if any(t.passed is False for t in outcome.targets) else 0


if __name__ == "__main__":
    raise SystemExit(main())
