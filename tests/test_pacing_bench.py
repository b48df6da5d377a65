"""The benchmark's quota scenarios (Q1-Q3 of issue 14) at CI size, through the same code as bench/run.py:
dirsync and the peer (installed from PyPI into bench/out/peer on first use) read the same emulated directory.
Timings on a shared CI machine prove nothing; rows, request counts and refusals are judged."""

from __future__ import annotations

from bench.scenarios import SMALL, run_scenarios


def test_small_quota_scenarios_read_the_whole_directory_with_the_minimum_requests(tmp_path):
    outcome = run_scenarios(["Q1", "Q2", "Q3"], SMALL, tmp_path)
    judged = [t for t in outcome.targets if not t.timing]
    assert judged and all(t.passed for t in judged), [t for t in judged if not t.passed]
    peers = [f for f in outcome.figures if f.run.startswith("peer")]
    assert len(peers) == 2 and all(f.correct for f in peers)
    syncs = [f for f in outcome.figures if not f.run.startswith("peer")]
    assert len(syncs) == 4 and all(f.requests == f.min_requests and f.rate_limited == 0 for f in syncs)
