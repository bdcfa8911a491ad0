"""The baselines faas is measured against, each a standalone program the benchmark starts."""
