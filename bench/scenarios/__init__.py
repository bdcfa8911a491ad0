"""The benchmark scenarios, one module each; ``registry`` maps a scenario name to its runner."""
