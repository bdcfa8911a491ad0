from __future__ import annotations

from faas.observe.metrics import Metrics


def test_child_is_the_labelled_metric_looked_up_once() -> None:
    metrics = Metrics()
    child = metrics.child(metrics.async_events_received, "fn")
    assert child is metrics.child(metrics.async_events_received, "fn")
    assert child is not metrics.child(metrics.async_events_received, "other")
    child.inc()
    child.inc()
    assert b'faas_async_events_received_total{function="fn"} 2.0' in metrics.render()
    assert metrics.child(metrics.throttles, "fn", "Reason") is not metrics.child(
        metrics.throttles, "fn", "Other"
    )
