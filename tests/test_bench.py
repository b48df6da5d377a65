"""The benchmark's small version, run by CI through the same code as bench/run.py.

It judges correctness and request counts only: timings on a shared CI machine prove nothing, and the
full-size figures live in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import urllib.request

from google.auth.credentials import AnonymousCredentials

from bench.scenarios import SMALL, run_scenarios
from dirsync_pipeline.emulator import DirectoryEmulator, FaultPlan, generate_directory
from dirsync_pipeline.emulator.service import STATS_PATH
from dirsync_pipeline.google.client import DirectoryClient


def test_emulator_stats_count_requests_and_429s_for_another_process():
    with DirectoryEmulator(generate_directory(50, 10, seed=3), faults=FaultPlan(rate_limit_qps=1)) as emulator:
        client = DirectoryClient(AnonymousCredentials(), api_endpoint=emulator.url)
        client.fetch_groups()
        client.fetch_groups()  # the bucket holds one token: this call is answered 429 first, then retried
        with urllib.request.urlopen(emulator.url.rstrip("/") + STATS_PATH) as answer:
            stats = json.load(answer)
    assert stats["faults"]["429"] >= 1
    assert stats["requests"]["groups.list"] == 2 + stats["faults"]["429"]
    assert stats["requests"] == emulator.request_counts()  # reading the stats is not itself counted


def test_small_benchmark_is_correct_and_makes_exactly_the_minimum_requests(tmp_path):
    outcome = run_scenarios(["S1", "S3"], SMALL, tmp_path)
    judged = [t for t in outcome.targets if not t.timing]
    assert judged and all(t.passed for t in judged), [t for t in judged if not t.passed]
    assert all(t.passed is None for t in outcome.targets if t.timing)
    syncs = [f for f in outcome.figures if f.requests is not None]
    assert len(syncs) == 2 and all(f.requests == f.min_requests and f.rate_limited == 0 for f in syncs)
