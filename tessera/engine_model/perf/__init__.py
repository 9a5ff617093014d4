"""Performance model: how long an engine step takes on a given accelerator.

Pure code over plain data (a model architecture, a batch, a catalog row,
efficiency factors), shared by the scheduler, the planner and the simulator:
  model_arch  sizes of the model
  operators   FLOPs and bytes per operator of one step, per device
  efficiency  the calibrated fractions of peak (and reading calibration.yaml)
  roofline    step time from the above
  comm        collectives and KV-cache transfers
  memory      KV-cache capacity
"""
