"""Adaptive keep-alive through a real server: a periodic function is released after each
invocation and pre-warmed in time for the next, so its invocations stay warm."""

from __future__ import annotations

import time

import pytest
from faas_support import ServerFactory, create_function, invoke_json, lambda_client, wait_until
from test_concurrency import SLEEPER, books, metric

pytestmark = pytest.mark.timeout(120)

PERIOD_S = 2.0


def environments(server: object, name: str) -> list[dict[str, object]]:
    return [env for env in books(server)["environments"] if env["function"] == name]  # type: ignore[arg-type]


def test_periodic_function_is_prewarmed_not_kept(make_server: ServerFactory) -> None:
    server = make_server(
        keep_alive_policy="adaptive", keep_alive_bin_s=0.25, keep_alive_bins=40,
        idle_timeout_s=60,
    )  # fmt: skip
    client = lambda_client(server)
    create_function(client, "periodic", SLEEPER)
    start = time.monotonic()
    timings = []
    for index in range(10):
        time.sleep(max(0.0, start + index * PERIOD_S - time.monotonic()))
        response, _ = invoke_json(client, "periodic")
        timings.append(response["ResponseMetadata"]["HTTPHeaders"]["x-faas-timings"])
    # Learned after five idle times: the environment goes right after the invocation...
    wait_until(lambda: not environments(server, "periodic"), 1.0, what="release at once")
    released_at = time.monotonic()
    # ...and one is back, initialized, before the next expected invocation.
    wait_until(lambda: [e for e in environments(server, "periodic") if e["place"] == "idle"],
               PERIOD_S, what="a pre-warmed environment")  # fmt: skip
    assert time.monotonic() - released_at < PERIOD_S
    cold_before = metric(server, "faas_cold_starts_total", function="periodic")
    response, _ = invoke_json(client, "periodic")
    assert "spawn=" not in response["ResponseMetadata"]["HTTPHeaders"]["x-faas-timings"]
    assert metric(server, "faas_cold_starts_total", function="periodic") == cold_before
    # The late invocations of the loop were already served by pre-warmed environments.
    assert all("spawn=" not in timing for timing in timings[-3:]), timings


def test_fixed_policy_keeps_environments_warm(make_server: ServerFactory) -> None:
    server = make_server(idle_timeout_s=60)
    client = lambda_client(server)
    create_function(client, "kept", SLEEPER)
    pid = invoke_json(client, "kept")[1]["pid"]
    assert [env["pid"] for env in environments(server, "kept")] == [pid]
    assert invoke_json(client, "kept")[1]["pid"] == pid
