"""Accelerators as data: per-vendor engine settings (and, later, the accelerator catalog)."""
