"""Compare two versions of dirsync on Q2's sync, alternating: `.venv/bin/python bench/ab.py ROUNDS TREE_A TREE_B`.

Each TREE is a folder holding a `dirsync_pipeline/` (a `git worktree` of another commit, say). One emulator
(Q2's: 20,000 users, 2,000 groups, 20 ms a request, no quota) serves every sync; each round runs the real
`dirsync sync` of A, then of B, each in a fresh process with that tree first on PYTHONPATH, so a spell of a
slower machine weighs on both. Prints each tree's walls and their median: a diagnostic for one change, not
a target (bench/run.py judges those).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make `bench` importable

from bench.harness import EmulatorProcess, run_sync  # noqa: E402
from bench.quota import FULL, RAISED_QPS, sync_config  # noqa: E402
from bench.scenarios import SEED  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", type=int)
    parser.add_argument("trees", nargs=2, type=Path)
    args = parser.parse_args()
    for tree in args.trees:  # each tree's bytecode cached, as bench/run.py does for this one
        compileall.compile_dir(tree / "dirsync_pipeline", quiet=1)
    users, groups, latency = FULL.q2
    walls: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    with EmulatorProcess(users, groups, seed=SEED, latency_ms=latency, rate_limit_qps=None) as emulator, \
            tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            for index, tree in enumerate(args.trees):
                os.environ["PYTHONPATH"] = str(tree.resolve())  # the child's dirsync_pipeline: this tree's
                config = sync_config(Path(workdir) / f"{round_}-{index}", emulator, rate_limit_qps=RAISED_QPS)
                sync = run_sync(config, emulator, timeout_seconds=600)
                if not sync.measured.ok:
                    raise SystemExit(f"{tree}: the sync failed\n{sync.measured.output_tail}")
                walls[tree].append(sync.measured.wall_seconds)
    for tree, seconds in walls.items():
        print(f"{tree}: median {statistics.median(seconds):.2f} s ({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
