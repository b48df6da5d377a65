from dirsync_pipeline.cli import run

raise SystemExit(run())
