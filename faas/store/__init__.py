"""The embedded store: registry, content-addressed code and the durable event queue."""
