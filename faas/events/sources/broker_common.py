"""What the broker sources (Redis Streams, RabbitMQ, NATS JetStream) share.

Design notes: a broker source is addressed by a URI given as the mapping's
EventSourceArn. The URI may carry a password; it is used to connect and nowhere
else: the shapes handlers receive, log lines and error messages use
``public_address(address)`` (the password replaced by ``***``), as the mapping
framework does. Each source accepts a fixed set of query parameters and
rejects any other, so a typo fails CreateEventSourceMapping instead of being
silently ignored.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass

from faas.events.sources import public_address

STARTING_POSITIONS = ("LATEST", "TRIM_HORIZON")


class SourceState(enum.Enum):
    NEW = "new"  # constructed, not yet started
    RUNNING = "running"  # started: receives, reconnecting on demand after a broker fault
    STOPPED = "stopped"  # disconnected for good


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A broker URI split into what connecting needs; ``display`` has no password."""

    scheme: str
    host: str
    port: int | None
    username: str  # percent-decoded; "" when absent
    password: str  # percent-decoded; "" when absent; never shown anywhere
    path: str  # percent-decoded, without the leading "/"
    params: dict[str, str]
    display: str


def parse_address(
    address: str, schemes: Collection[str], allowed_params: Collection[str]
) -> BrokerAddress:
    """Split ``address``; reject a foreign scheme, a missing host or an unknown parameter.

    Raises:
        ValueError: with a message that never contains the password.
    """
    display = public_address(address)
    try:
        parts = urllib.parse.urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"EventSourceArn {display} is not a valid URI: {exc}") from None
    if parts.scheme not in schemes:
        expected = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"EventSourceArn {display} must start with {expected}")
    if not parts.hostname:
        raise ValueError(f"EventSourceArn {display} has no host")
    if parts.fragment:
        raise ValueError(f"EventSourceArn {display} must not have a #fragment")
    params: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed_params:
            known = ", ".join(sorted(allowed_params))
            raise ValueError(
                f"EventSourceArn {display} has an unknown parameter {name!r} (known: {known})"
            )
        if name in params:
            raise ValueError(f"EventSourceArn {display} repeats the parameter {name!r}")
        params[name] = value
    return BrokerAddress(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        username=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        path=urllib.parse.unquote(parts.path[1:] if parts.path.startswith("/") else parts.path),
        params=params,
        display=display,
    )


def int_param(address: BrokerAddress, name: str, default: int, minimum: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent), at least ``minimum``."""
    text = address.params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"EventSourceArn {address.display}: {name} must be an integer, not {text!r}"
        ) from None
    if value < minimum:
        raise ValueError(f"EventSourceArn {address.display}: {name} must be at least {minimum}")
    return value


def required_param(address: BrokerAddress, name: str) -> str:
    """The non-empty query parameter ``name``."""
    value = address.params.get(name, "")
    if not value:
        raise ValueError(f"EventSourceArn {address.display} needs ?{name}=")
    return value


def check_starting_position(starting_position: str, display: str) -> None:
    """Streams start at the newest (LATEST) or the oldest (TRIM_HORIZON) record."""
    if starting_position and starting_position not in STARTING_POSITIONS:
        raise ValueError(
            f"StartingPosition {starting_position} is not supported for {display}; "
            f"use one of {', '.join(STARTING_POSITIONS)}"
        )
