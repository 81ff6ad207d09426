"""immudoc benchmarks: every workload beside its peers, measured in the same run."""
