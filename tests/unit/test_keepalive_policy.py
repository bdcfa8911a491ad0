"""The keep-alive policies: fixed, and the hybrid histogram policy's windows."""

from __future__ import annotations

import random

import pytest

from faas.pool.keepalive import MIN_SAMPLES, KeepAlivePolicy, KeepAliveWindow

KEY = ("fn", "1")


def replay(policy: KeepAlivePolicy, idle_times: list[float], duration_s: float = 0.1) -> float:
    """Invocations separated by ``idle_times``; returns when the last one ended."""
    now = 1000.0
    for idle in idle_times:
        policy.invocation_started(KEY, now)
        now += duration_s
        policy.invocation_ended(KEY, now)
        now += idle
    policy.invocation_started(KEY, now)
    now += duration_s
    policy.invocation_ended(KEY, now)
    return now


def test_fixed_policy_keeps_for_the_idle_timeout() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=False, bin_s=60.0, bins=240)
    replay(policy, [300.0] * 20)
    assert policy.window(KEY) == KeepAliveWindow(0.0, 600.0)
    assert not policy.window(KEY).releases_at_once


def test_too_few_samples_fall_back_to_the_fixed_keep_alive() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=60.0, bins=240)
    replay(policy, [1800.0] * (MIN_SAMPLES - 1))
    assert policy.window(KEY) == KeepAliveWindow(0.0, 600.0)


def test_a_periodic_function_is_released_and_prewarmed_before_its_next_invoke() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=60.0, bins=240)
    # Every 30 minutes, give or take a few seconds: a fixed 10-minute keep-alive always misses.
    rng = random.Random(7)
    replay(policy, [1800.0 + rng.uniform(-5, 5) for _ in range(20)])
    window = policy.window(KEY)
    assert window.releases_at_once
    # The 5th percentile bin is minute 29 (1795 s): pre-warm 10 % before it.
    assert window.prewarm_s == pytest.approx(29 * 60 * 0.9)
    # Kept until the 99th percentile bin's end (minute 31) plus 10 %.
    assert window.prewarm_s + window.keep_alive_s == pytest.approx(31 * 60 * 1.1)
    assert window.prewarm_s < 1795 < window.prewarm_s + window.keep_alive_s


def test_spread_out_idle_times_fall_back_to_the_fixed_keep_alive() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=60.0, bins=240)
    replay(policy, [60.0 * minute + 1 for minute in range(0, 240, 2)])
    assert policy.window(KEY) == KeepAliveWindow(0.0, 600.0)


def test_idle_times_beyond_the_range_fall_back_to_the_fixed_keep_alive() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=60.0, bins=240)
    replay(policy, [5 * 3600.0] * 10 + [120.0] * 6)
    assert policy.window(KEY) == KeepAliveWindow(0.0, 600.0)


def test_only_gaps_with_nothing_running_are_idle_times() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=1.0, bins=100)
    now = 0.0
    for _ in range(10):
        # Two overlapping invocations, then 50 s of nothing.
        policy.invocation_started(KEY, now)
        policy.invocation_started(KEY, now + 0.5)
        policy.invocation_ended(KEY, now + 1.0)
        assert policy.last_end(KEY) is None  # one still runs
        policy.invocation_ended(KEY, now + 2.0)
        assert policy.last_end(KEY) == now + 2.0
        now += 52.0
    window = policy.window(KEY)
    assert window.releases_at_once
    assert window.prewarm_s == pytest.approx(50 * 0.9)


def test_forget_drops_a_deleted_functions_history() -> None:
    policy = KeepAlivePolicy(600.0, adaptive=True, bin_s=60.0, bins=240)
    replay(policy, [1800.0] * 10)
    assert policy.window(KEY).releases_at_once
    policy.forget("fn")
    assert policy.window(KEY) == KeepAliveWindow(0.0, 600.0)
    assert policy.last_end(KEY) is None
