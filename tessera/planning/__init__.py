"""The autoscaler's planner: which instances to run for the forecast load under the SLOs, at least cost.

Pure code over plain data (a policy, a load mix, planned engines, small state records), so
the autoscaler service, `tessera sim` and the tests run the same decisions. The only module
that reads files is `engines` (the catalog, vendor table and calibration, through
`tessera.engine_model.build`). See docs/autoscaling.md.
"""
