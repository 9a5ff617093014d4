"""Model resolution and preparation: names like ``smollm2`` and ``tiny`` to local folders."""
