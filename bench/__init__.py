"""The faas load benchmark suite."""
