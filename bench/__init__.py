"""dirsync's benchmark: the real pipeline against the emulator at enterprise scale (bench/RESULTS.md)."""
