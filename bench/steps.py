"""Where a sync spends its time and memory, step by step: a diagnostic, not a target.

Runs the `directory_sync` job in-process exactly like `dirsync sync`, with a thread sampling this
process's RSS every 20 ms, then prints one JSON line: per Dagster step, its duration and the peak RSS
while it ran. ``python -m bench.steps --config FILE --connection ID``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import psutil

SAMPLE_SECONDS = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--connection", required=True)
    args = parser.parse_args()
    samples: list[tuple[float, int]] = []
    threading.Thread(target=_sample, args=(samples,), daemon=True).start()

    import dagster as dg  # imported after the sampler starts: import costs count too

    from dirsync_pipeline.cli import sync
    from dirsync_pipeline.defs.partitions import CONNECTIONS

    job = dg.build_reconstructable_job(sync.__name__, sync.sync_job.__name__, reconstructable_args=(args.config, "directory_sync"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CONNECTIONS.name, [args.connection])  # as `dirsync sync` does
    result = dg.execute_job(job, instance=instance, tags={sync.PARTITION_TAG: args.connection},  # as `dirsync sync` runs it
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    starts = [(e.timestamp, e.step_key) for e in instance.all_logs(result.run_id)
              if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
    bounds = [*starts, (time.time(), "end")]
    steps = [{"step": key, "seconds": round(end - begin, 2),
              "peak_mib": round(max((rss for t, rss in samples if begin <= t <= end), default=0) / 2**20)}
             for (begin, key), (end, _) in zip(bounds, bounds[1:])]
    print(json.dumps({"success": result.success, "steps": steps}))


def _sample(samples: list[tuple[float, int]]) -> None:
    process = psutil.Process()
    while True:
        samples.append((time.time(), process.memory_info().rss))
        time.sleep(SAMPLE_SECONDS)


if __name__ == "__main__":
    main()
