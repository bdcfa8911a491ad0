"""Event sources a mapping can poll, chosen by the form of the mapping's EventSourceArn.

Design notes: the address alone names the broker module (``arn:aws:sqs:`` is SQS,
``redis://`` Redis Streams, ``amqp://`` RabbitMQ, ``nats://`` NATS JetStream). A
module is imported only when a mapping needs it, so a node without one broker's
client library still serves the others, and such an address is refused when the
mapping is created. The import runs on a worker thread (``load_module``), so the
event loop never waits for a client library to load. Every answer here is in
Lambda's error shapes because it runs inside CreateEventSourceMapping /
UpdateEventSourceMapping.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Protocol, cast
from urllib.parse import urlsplit, urlunsplit

from faas.errors import InvalidParameterValueException
from faas.events.sources.base import EventSource, SourceKind, SourceSpec

# Address prefix -> module under faas.events.sources, tried in order.
_MODULES_BY_PREFIX = (
    ("arn:aws:sqs:", "sqs"),
    ("redis://", "redis_streams"),
    ("rediss://", "redis_streams"),
    ("amqp://", "rabbitmq"),
    ("amqps://", "rabbitmq"),
    ("nats://", "nats_jetstream"),
)
_MAX_ADDRESS_LENGTH = 2048
# Schemes whose lone user name (no password) is itself a secret: NATS sends it as a token.
_TOKEN_USER_SCHEMES = ("nats",)


class SourceModule(Protocol):
    """What every source module offers (see ``SourceSpec``)."""

    def validate(self, spec: SourceSpec) -> None: ...

    def open_source(self, spec: SourceSpec) -> EventSource: ...


def _module_for(address: str) -> SourceModule:
    """The module that speaks ``address``'s broker.

    Raises:
        InvalidParameterValueException: no module speaks this form, or its client
            library is not installed on this node.
    """
    if not address or len(address) > _MAX_ADDRESS_LENGTH:
        raise InvalidParameterValueException(
            "EventSourceArn must be an SQS queue ARN or a redis://, amqp:// or nats:// URI."
        )
    for prefix, name in _MODULES_BY_PREFIX:
        if address.startswith(prefix):
            try:
                module = importlib.import_module(f"faas.events.sources.{name}")
            except ImportError as exc:
                raise InvalidParameterValueException(
                    f"Event sources of the form {prefix}... are not available on this node: {exc}"
                ) from exc
            return cast(SourceModule, module)
    raise InvalidParameterValueException(
        f"Unsupported event source {public_address(address)}: this node polls SQS queues "
        "(arn:aws:sqs:...), Redis Streams (redis://), RabbitMQ (amqp://) and NATS JetStream "
        "(nats://)."
    )


async def load_module(address: str) -> None:
    """Import the module that speaks ``address``'s broker, on a worker thread.

    A broker client library takes up to a quarter of a second to import; the event
    loop must not stall for it. ``validate`` and ``open_source`` then find it loaded.

    Raises:
        InvalidParameterValueException: as ``validate``, for an unsupported address.
    """
    await asyncio.to_thread(_module_for, address)


def validate(spec: SourceSpec) -> SourceKind:
    """Check ``spec`` without touching the network; return the kind of source it names.

    Raises:
        InvalidParameterValueException: the address is of no supported form, or its
            module finds fault with it.
    """
    module = _module_for(spec.address)
    try:
        module.validate(spec)
    except ValueError as exc:
        raise InvalidParameterValueException(str(exc)) from exc
    # Constructing a source does no I/O (SourceSpec's contract); only its kind is read.
    return module.open_source(spec).kind


def open_source(spec: SourceSpec) -> EventSource:
    """A source for ``spec``, not yet started (``validate`` it first)."""
    return _module_for(spec.address).open_source(spec)


def public_address(address: str) -> str:
    """``address`` fit for logs and event records: a URI's password (or NATS token) is ``***``."""
    if "://" not in address:
        return address
    try:
        parts = urlsplit(address)
        password = parts.password
    except ValueError:
        return address.split("://", 1)[0] + "://***"
    if not password:
        if parts.scheme in _TOKEN_USER_SCHEMES and parts.username:
            return urlunsplit(parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[1]}"))
        return address
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
