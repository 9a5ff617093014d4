"""Unit tests: pure code and in-process servers only, no processes started (`make test-unit`, seconds)."""
