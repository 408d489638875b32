"""DPOEvaluation's workload: both endpoints on the same held-out examples, and the statistics of the comparison."""
