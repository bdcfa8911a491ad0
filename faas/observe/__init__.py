"""Metrics and function logs."""
