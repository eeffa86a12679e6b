"""Training on Ray Train: the run's config, the driver (`fit`), the per-worker loop, validation and curves."""
