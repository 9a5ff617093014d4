"""How fast an engine instance is and how it batches, without weights: the catalog, the
performance model, and the simulated engine's continuous batching.

Pure code over plain data (reading only the catalog, the calibration file and a model's
config.json), shared by the scheduler's speed estimates, the planner, the sim worker and the
discrete-event simulator, so they all agree on how fast an instance is.
"""
