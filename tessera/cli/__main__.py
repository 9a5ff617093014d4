"""``python -m tessera.cli``: the same as the ``tessera`` command (used to launch services)."""

from tessera.cli import main

raise SystemExit(main())
