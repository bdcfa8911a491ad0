"""Admission books of the pool, without a server: the scaling-rate token bucket and Lambda's
concurrency rules (reserved pools, the unreserved share of the account limit)."""

from __future__ import annotations

import random

import pytest

from faas.errors import TooManyRequestsException
from faas.pool.burst import TokenBucket
from faas.pool.concurrency_limits import (
    REASON_ACCOUNT,
    REASON_RESERVED,
    ConcurrencyLimits,
)

# --- TokenBucket ----------------------------------------------------------------------------


def drain(bucket: TokenBucket, now: float) -> int:
    """Take every token there is at ``now``; returns how many."""
    taken = 0
    while bucket.try_take(now):
        taken += 1
        assert taken <= 10_000, "the bucket never ran dry"
    return taken


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(5, 10.0, now=100.0)
    assert bucket.is_full(100.0)
    assert bucket.seconds_until_token(100.0) == 0.0
    assert drain(bucket, 100.0) == 5
    assert not bucket.try_take(100.0)
    assert not bucket.is_full(100.0)


def test_bucket_refills_continuously_at_capacity_over_window() -> None:
    # 10 tokens per 20 s: one every 2 s, and fractions of one in between (no steps).
    bucket = TokenBucket(10, 20.0, now=0.0)
    drain(bucket, 0.0)
    assert bucket.seconds_until_token(0.0) == pytest.approx(2.0)
    assert bucket.seconds_until_token(0.5) == pytest.approx(1.5)
    assert not bucket.try_take(1.9)
    assert bucket.seconds_until_token(1.9) == pytest.approx(0.1)
    assert bucket.try_take(2.0)
    assert not bucket.try_take(2.0)
    # 7 s later 3.5 tokens have accrued: three whole ones, half of the next.
    assert drain(bucket, 9.0) == 3
    assert bucket.seconds_until_token(9.0) == pytest.approx(1.0)
    assert bucket.try_take(10.0)


def test_bucket_rate_is_lambdas_thousand_per_ten_seconds() -> None:
    bucket = TokenBucket(1000, 10.0, now=0.0)
    assert drain(bucket, 0.0) == 1000
    assert bucket.seconds_until_token(0.0) == pytest.approx(0.01)
    assert not bucket.try_take(0.009)
    assert bucket.try_take(0.0101)
    # Half the window refills half the bucket.
    assert drain(bucket, 5.0101) == 500


def test_bucket_never_holds_more_than_capacity() -> None:
    bucket = TokenBucket(3, 1.0, now=0.0)
    drain(bucket, 0.0)
    # A long rest refills to capacity, not to rest * rate.
    assert bucket.is_full(1000.0)
    assert drain(bucket, 1000.0) == 3
    # Giving back more than was taken does not raise the ceiling either.
    bucket = TokenBucket(2, 1.0, now=0.0)
    for _ in range(5):
        bucket.give_back(0.0)
    assert drain(bucket, 0.0) == 2


def test_give_back_returns_one_usable_token() -> None:
    bucket = TokenBucket(4, 400.0, now=0.0)  # 0.01 token/s: refill is negligible here
    drain(bucket, 0.0)
    assert bucket.seconds_until_token(1.0) > 0
    bucket.give_back(1.0)
    assert bucket.seconds_until_token(1.0) == 0.0
    assert bucket.try_take(1.0)
    assert not bucket.try_take(1.0)
    # A returned token adds to what accrued meanwhile instead of replacing it.
    bucket = TokenBucket(2, 2.0, now=0.0)  # 1 token/s
    drain(bucket, 0.0)
    bucket.give_back(0.5)  # 0.5 accrued + 1 given back
    assert bucket.try_take(0.5)
    assert not bucket.try_take(0.5)
    assert bucket.seconds_until_token(0.5) == pytest.approx(0.5)


def test_bucket_ignores_time_going_backwards() -> None:
    bucket = TokenBucket(2, 2.0, now=10.0)
    drain(bucket, 10.0)
    # An earlier timestamp neither refills nor moves the books back.
    assert not bucket.try_take(5.0)
    assert bucket.seconds_until_token(5.0) == pytest.approx(1.0)
    assert bucket.seconds_until_token(10.5) == pytest.approx(0.5)
    assert bucket.try_take(11.0)


def test_bucket_against_a_reference_model() -> None:
    rng = random.Random(20240601)
    # Dyadic steps and rate: the model's float arithmetic is exact, no rounding to disagree on.
    capacity, window = 8, 4.0
    rate = capacity / window
    bucket = TokenBucket(capacity, window, now=0.0)
    tokens, now = float(capacity), 0.0
    for _ in range(3000):
        step = rng.choice([0.0, 0.0, 0.125, 0.25, 0.375, 1.0, 5.0])
        now += step
        tokens = min(float(capacity), tokens + step * rate)
        op = rng.random()
        if op < 0.6:
            expected = tokens >= 1.0
            assert bucket.try_take(now) is expected
            if expected:
                tokens -= 1.0
        elif op < 0.75:
            bucket.give_back(now)
            tokens = min(float(capacity), tokens + 1.0)
        else:
            assert bucket.seconds_until_token(now) == pytest.approx(
                max(0.0, (1.0 - tokens) / rate), abs=1e-6
            )
        assert 0.0 <= bucket.seconds_until_token(now) <= 1.0 / rate + 1e-9
        assert bucket.is_full(now) is (tokens >= capacity)


# --- ConcurrencyLimits -------------------------------------------------------------------------


def reason_of(refusal: TooManyRequestsException | None) -> str | None:
    if refusal is None:
        return None
    assert isinstance(refusal, TooManyRequestsException)
    assert refusal.status == 429
    assert refusal.extra_members() == {"Reason": refusal.reason}
    return refusal.reason


def take_all(limits: ConcurrencyLimits, name: str, at_most: int = 10_000) -> int:
    """Start executions of ``name`` until one is refused; returns how many started."""
    started = 0
    while limits.refusal(name) is None:
        limits.take(name)
        started += 1
        assert started <= at_most, f"{name} was never refused"
    return started


def test_unreserved_functions_share_the_account_limit() -> None:
    limits = ConcurrencyLimits(3)
    assert limits.unreserved_limit == 3
    limits.take("a")
    limits.take("b")
    limits.take("a")
    assert limits.in_flight == 3
    assert limits.in_flight_of("a") == 2
    assert reason_of(limits.refusal("a")) == REASON_ACCOUNT
    assert reason_of(limits.refusal("c")) == REASON_ACCOUNT
    limits.give_back("b")
    assert limits.refusal("c") is None
    assert limits.in_flight_of("b") == 0
    assert limits.in_flight == 2


def test_reserved_is_a_ceiling() -> None:
    limits = ConcurrencyLimits(100)
    limits.set_reserved("a", 2)
    assert limits.reserved("a") == 2
    assert take_all(limits, "a") == 2
    assert reason_of(limits.refusal("a")) == REASON_RESERVED
    # Others draw on the unreserved pool, unaffected by a's ceiling.
    assert limits.refusal("b") is None
    limits.give_back("a")
    assert limits.refusal("a") is None


def test_reserved_zero_refuses_everything() -> None:
    limits = ConcurrencyLimits(100)
    limits.set_reserved("off", 0)
    assert limits.reserved("off") == 0
    assert reason_of(limits.refusal("off")) == REASON_RESERVED
    assert limits.unreserved_limit == 100
    assert limits.in_flight == 0
    limits.set_reserved("off", None)
    assert limits.reserved("off") is None
    assert limits.refusal("off") is None


def test_unreserved_share_is_the_account_minus_every_reservation() -> None:
    limits = ConcurrencyLimits(10)
    limits.set_reserved("a", 4)
    limits.set_reserved("b", 3)
    assert limits.unreserved_limit == 3
    # Replacing a reservation counts the new value only (not both).
    limits.set_reserved("a", 5)
    assert limits.unreserved_limit == 2
    limits.set_reserved("a", 4)
    assert limits.unreserved_limit == 3
    # Reserved executions do not eat into the unreserved share...
    assert take_all(limits, "a") == 4
    assert take_all(limits, "b") == 3
    # ...which c and d share between them.
    limits.take("c")
    limits.take("d")
    limits.take("c")
    assert reason_of(limits.refusal("c")) == REASON_ACCOUNT
    assert reason_of(limits.refusal("d")) == REASON_ACCOUNT
    assert limits.in_flight == 10
    limits.set_reserved("b", None)
    assert limits.unreserved_limit == 6
    # b's 3 running executions now count against the unreserved share: 3 + 3 = 6, full.
    assert reason_of(limits.refusal("c")) == REASON_ACCOUNT
    assert reason_of(limits.refusal("b")) == REASON_ACCOUNT


def test_reserving_a_running_function_moves_its_executions_out_of_the_shared_pool() -> None:
    limits = ConcurrencyLimits(10)
    limits.take("a")
    limits.take("a")  # two unreserved executions of a
    limits.set_reserved("a", 5)
    assert limits.in_flight_of("a") == 2
    assert limits.unreserved_limit == 5
    # a's running executions are not in the shared pool any more: c gets all 5.
    assert take_all(limits, "c") == 5
    # a's reservation holds 3 more.
    assert take_all(limits, "a") == 3
    # Finishing a's executions frees a's pool, never the shared one.
    for _ in range(5):
        limits.give_back("a")
    assert limits.in_flight_of("a") == 0
    assert reason_of(limits.refusal("c")) == REASON_ACCOUNT
    assert take_all(limits, "a") == 5
    assert limits.in_flight == 10


def test_unreserving_a_running_function_moves_its_executions_into_the_shared_pool() -> None:
    limits = ConcurrencyLimits(10)
    limits.set_reserved("a", 4)
    assert take_all(limits, "a") == 4
    limits.set_reserved("a", None)
    assert limits.unreserved_limit == 10
    # a's 4 executions now count against the shared 10.
    assert take_all(limits, "c") == 6
    for _ in range(4):
        limits.give_back("a")
    assert limits.in_flight == 6
    assert take_all(limits, "c") == 4
    for _ in range(10):
        limits.give_back("c")
    assert limits.in_flight == 0
    assert take_all(limits, "d") == 10


def test_lowering_a_reservation_below_running_lets_them_finish() -> None:
    limits = ConcurrencyLimits(100)
    limits.set_reserved("a", 5)
    assert take_all(limits, "a") == 5
    limits.set_reserved("a", 2)
    assert limits.in_flight_of("a") == 5
    assert reason_of(limits.refusal("a")) == REASON_RESERVED
    limits.give_back("a")
    limits.give_back("a")
    limits.give_back("a")
    assert reason_of(limits.refusal("a")) == REASON_RESERVED  # 2 running, 2 reserved
    limits.give_back("a")
    assert limits.refusal("a") is None
    limits.give_back("a")
    assert limits.in_flight == 0
    # The shared pool never saw any of it.
    assert take_all(limits, "b") == 98


def test_limits_against_a_reference_model() -> None:
    """Random reservations, starts and finishes: refusals match the rules at every step."""
    rng = random.Random(7)
    account = 12
    names = ["a", "b", "c", "d"]
    limits = ConcurrencyLimits(account)
    reserved: dict[str, int] = {}
    running = dict.fromkeys(names, 0)

    def expected_reason(name: str) -> str | None:
        if name in reserved:
            return REASON_RESERVED if running[name] >= reserved[name] else None
        shared = sum(n for other, n in running.items() if other not in reserved)
        return REASON_ACCOUNT if shared >= account - sum(reserved.values()) else None

    for _ in range(5000):
        name = rng.choice(names)
        op = rng.random()
        if op < 0.45:
            if limits.refusal(name) is None:
                limits.take(name)
                running[name] += 1
        elif op < 0.85:
            if running[name]:
                limits.give_back(name)
                running[name] -= 1
        elif op < 0.95:
            value = rng.choice([0, 1, 2, 3, 4])
            if sum(v for n, v in reserved.items() if n != name) + value <= account:
                limits.set_reserved(name, value)
                reserved[name] = value
        else:
            limits.set_reserved(name, None)
            reserved.pop(name, None)
        assert limits.unreserved_limit == account - sum(reserved.values())
        assert limits.in_flight == sum(running.values())
        for other in names:
            assert limits.in_flight_of(other) == running[other]
            assert limits.reserved(other) == reserved.get(other)
            assert reason_of(limits.refusal(other)) == expected_reason(other), (
                other,
                running,
                reserved,
            )
    for name in names:
        for _ in range(running[name]):
            limits.give_back(name)
    assert limits.in_flight == 0
    for name in names:
        limits.set_reserved(name, None)
    assert take_all(limits, "a") == account
