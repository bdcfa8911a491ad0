"""The native Python runtime: one Lambda handler per process, on msgpack frames or Runtime API."""
