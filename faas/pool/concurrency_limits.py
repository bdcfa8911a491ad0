"""Lambda's concurrency rules as books: the account limit, reserved pools, the unreserved rest.

Design notes: an execution counts against exactly one pool. A function with reserved
concurrency draws only on its own pool (a guarantee and a ceiling, ``0`` refuses
everything); every other function shares what the reservations leave of the account
limit. The books are plain integers updated on the event loop, so checking and taking
a unit is one step with no await in between.
"""

from __future__ import annotations

from faas.errors import TooManyRequestsException

# Lambda keeps at least this much of the account limit for functions without a reservation.
UNRESERVED_MINIMUM = 100

REASON_ACCOUNT = "ConcurrentInvocationLimitExceeded"
REASON_RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
REASON_RATE = "FunctionInvocationRateLimitExceeded"


class ConcurrencyLimits:
    """Who may start one more execution, and the count of those running."""

    __slots__ = ("_account_limit", "_by_function", "_reserved", "_reserved_total", "_unreserved")

    def __init__(self, account_limit: int) -> None:
        self._account_limit = account_limit
        self._reserved: dict[str, int] = {}
        self._reserved_total = 0
        self._by_function: dict[str, int] = {}
        self._unreserved = 0  # executions of functions without a reservation

    @property
    def account_limit(self) -> int:
        return self._account_limit

    @property
    def unreserved_limit(self) -> int:
        """The account limit minus every reservation (what GetAccountSettings reports)."""
        return self._account_limit - self._reserved_total

    @property
    def in_flight(self) -> int:
        return sum(self._by_function.values())

    def in_flight_by_function(self) -> list[tuple[str, int]]:
        """(function name, executions running) of every function with one running."""
        return list(self._by_function.items())

    def in_flight_of(self, function_name: str) -> int:
        return self._by_function.get(function_name, 0)

    def reserved(self, function_name: str) -> int | None:
        return self._reserved.get(function_name)

    def set_reserved(self, function_name: str, reserved: int | None) -> None:
        """Apply a reservation (None removes it); running executions move pools with it."""
        running = self._by_function.get(function_name, 0)
        if function_name not in self._reserved:
            self._unreserved -= running
        self._reserved_total -= self._reserved.pop(function_name, 0)
        if reserved is not None:
            self._reserved[function_name] = reserved
            self._reserved_total += reserved
        else:
            self._unreserved += running

    def refusal(self, function_name: str) -> TooManyRequestsException | None:
        """Why one more execution of ``function_name`` may not start now, or None."""
        reserved = self._reserved.get(function_name)
        if reserved is not None:
            if self._by_function.get(function_name, 0) >= reserved:
                return TooManyRequestsException("Rate Exceeded.", reason=REASON_RESERVED)
            return None
        if self._unreserved >= self._account_limit - self._reserved_total:
            return TooManyRequestsException("Rate Exceeded.", reason=REASON_ACCOUNT)
        return None

    def take(self, function_name: str) -> None:
        self._by_function[function_name] = self._by_function.get(function_name, 0) + 1
        if function_name not in self._reserved:
            self._unreserved += 1

    def give_back(self, function_name: str) -> None:
        left = self._by_function[function_name] - 1
        if left:
            self._by_function[function_name] = left
        else:
            del self._by_function[function_name]
        if function_name not in self._reserved:
            self._unreserved -= 1
