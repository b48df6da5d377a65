from dirsync_pipeline.cli import main

raise SystemExit(main())
