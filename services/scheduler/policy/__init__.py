"""Placement policy as pure code: plain snapshots in, a decision out.

No I/O and no globals, so the live scheduler, the unit tests and the
simulator run the very same objects.
"""
