"""`kubectl tidegate`: see and steer ProgressiveRollouts from a terminal or a CI job."""
