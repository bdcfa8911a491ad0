"""Asynchronous invocation and, later, event sources and schedules."""
