"""The native Python runtime: one Lambda handler per process, spoken to in msgpack frames."""
