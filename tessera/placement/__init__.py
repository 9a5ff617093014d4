"""Placement as pure code: plain snapshots in, a decision out.

Filters, scorers and pickers (each a registry, see ``registry``), profiles that combine them,
the prefix-cache index and the canonical block hashes it matches, and the prefill/decode pairing.
No I/O and no globals beyond the registries, so the live scheduler, the unit tests and the
simulator run the very same objects.
"""
