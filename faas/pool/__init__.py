"""Warm execution environments and the manager that hands invocations to them."""
