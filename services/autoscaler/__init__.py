"""The autoscaler: desired worker set, reconciled through an actuator under leader election."""
