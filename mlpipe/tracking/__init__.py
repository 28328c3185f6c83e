"""Stage runs in MLflow: names, experiments, keys."""
