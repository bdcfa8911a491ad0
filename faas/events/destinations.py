"""Deliver a message to a dead-letter or destination target named by its ARN.

Design notes: three kinds of target are reachable from a node, each by the ARN a
Lambda user would write for it:

- ``arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]``: the body
  becomes an Event invocation of that function, submitted to the same durable
  queue as any other (so a crash after delivery never loses it);
- ``arn:aws:sqs:<region>:<account>:<queue>``: ``SendMessage`` to an SQS-compatible
  queue at ``EventsConfig.sqs_endpoint_url`` (boto3 on a worker thread; the queue
  URL comes from ``GetQueueUrl`` with the ARN's last part and account, and is cached);
- ``arn:aws:faas:<region>:<account>:dlq:<queue>``: a queue kept in the node's own
  store, read and redriven with ``faas dlq list|redrive <queue>``.

``validate_target`` runs when a target is configured (PutFunctionEventInvokeConfig,
DeadLetterConfig, a mapping's DestinationConfig) and answers in Lambda's error
shapes; ``deliver`` raises on any failure and leaves counting and logging to the
caller, who knows which metric the failure belongs to. Message attributes are
strings; those named in ``NUMBER_ATTRIBUTES`` are sent to SQS as ``Number``.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faas.config import ApiConfig, EventsConfig
from faas.errors import InvalidParameterValueException, ResourceNotFoundException
from faas.events.intake import EventIntake
from faas.events.sqs_client import make_sqs_client
from faas.models import LATEST
from faas.store.base import DeadLetter, DeadLetterStore, QueuedEvent
from faas.versions import VersionCatalog

# Message attributes whose values are numbers (SQS DataType "Number"); the rest are strings.
NUMBER_ATTRIBUTES = frozenset({"ErrorCode"})
STORE_QUEUE_SERVICE = "faas"
STORE_QUEUE_RESOURCE = "dlq"

_ARN = re.compile(r"arn:(aws[a-zA-Z-]*)?:([a-z0-9-.]+):([a-z0-9-]*):([0-9]*):(.+)")
_FUNCTION_RESOURCE = re.compile(r"function:([a-zA-Z0-9_-]{1,64})(?::(\$LATEST|[a-zA-Z0-9_-]+))?")
_SQS_QUEUE = re.compile(r"[a-zA-Z0-9_-]{1,80}(\.fifo)?")
_STORE_QUEUE_RESOURCE = re.compile(STORE_QUEUE_RESOURCE + r":([a-zA-Z0-9_-]{1,64})")
_SQS_TIMEOUT_S = 30.0


class TargetKind(enum.Enum):
    FUNCTION = "function"  # an Event invocation of a function on this node
    SQS = "sqs"  # an SQS-compatible queue
    STORE_QUEUE = "store-queue"  # a dead-letter queue in the node's own store


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target ARN."""

    kind: TargetKind
    arn: str
    region: str
    account_id: str
    name: str  # function, SQS queue or store queue name
    qualifier: str | None = None  # functions only


class DeliveryState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # delivering
    STOPPED = "stopped"  # SQS clients released; deliveries refused


class DestinationDelivery:
    """Sends bodies to function, SQS and store-queue targets; checks targets when configured."""

    __slots__ = ("_api", "_events", "_intake", "_queue_urls", "_sqs_clients", "_sqs_lock",
                 "_state", "_store", "_versions")  # fmt: skip

    def __init__(
        self,
        api: ApiConfig,
        events: EventsConfig,
        versions: VersionCatalog,
        intake: EventIntake,
        store: DeadLetterStore,
    ) -> None:
        self._api = api
        self._events = events
        self._versions = versions
        self._intake = intake
        self._store = store
        self._sqs_clients: dict[str, Any] = {}  # by region; botocore clients are untyped
        self._queue_urls: dict[str, str] = {}  # by queue ARN
        self._sqs_lock = asyncio.Lock()
        self._state = DeliveryState.NEW

    async def start(self) -> None:
        if self._state is not DeliveryState.NEW:
            raise RuntimeError(f"destination delivery cannot start from {self._state.value}")
        self._state = DeliveryState.RUNNING

    async def stop(self) -> None:
        self._state = DeliveryState.STOPPED
        clients = list(self._sqs_clients.values())
        self._sqs_clients.clear()
        self._queue_urls.clear()
        for client in clients:
            await asyncio.to_thread(client.close)

    def store_queue_arn(self, queue: str) -> str:
        """The ARN of the store queue named ``queue`` on this node."""
        return (
            f"arn:aws:{STORE_QUEUE_SERVICE}:{self._api.region}:{self._api.account_id}:"
            f"{STORE_QUEUE_RESOURCE}:{queue}"
        )

    # --- checking ----------------------------------------------------------------------

    def parse(self, target_arn: str) -> Target:
        """The target an ARN names, checked for shape and support (not for existence).

        Raises:
            InvalidParameterValueException: not an ARN, or a kind of target this node
                cannot reach (SNS, EventBridge, S3...), or a function or store queue of
                another region or account.
        """
        match = _ARN.fullmatch(target_arn) if len(target_arn) <= 350 else None
        if match is None:
            raise InvalidParameterValueException(f"The destination ARN {target_arn} is invalid.")
        service, region, account_id, resource = match.group(2, 3, 4, 5)
        if service == "sqs":
            # The region picks the SQS endpoint: without one no message could ever be sent.
            if not region or not _SQS_QUEUE.fullmatch(resource):
                raise InvalidParameterValueException(
                    f"The destination ARN {target_arn} does not name an SQS queue."
                )
            return Target(TargetKind.SQS, target_arn, region, account_id, resource)
        if service == "lambda":
            function = _FUNCTION_RESOURCE.fullmatch(resource)
            if function is None:
                raise InvalidParameterValueException(
                    f"The destination ARN {target_arn} does not name a Lambda function."
                )
            self._require_local(target_arn, region, account_id)
            return Target(TargetKind.FUNCTION, target_arn, region, account_id,
                          function.group(1), function.group(2))  # fmt: skip
        if service == STORE_QUEUE_SERVICE:
            queue = _STORE_QUEUE_RESOURCE.fullmatch(resource)
            if queue is None:
                raise InvalidParameterValueException(
                    f"The destination ARN {target_arn} does not name a faas dead-letter queue "
                    f"(expected {self.store_queue_arn('<queue-name>')})."
                )
            self._require_local(target_arn, region, account_id)
            return Target(TargetKind.STORE_QUEUE, target_arn, region, account_id, queue.group(1))
        raise InvalidParameterValueException(
            f"The destination ARN {target_arn} names a {service} resource; this node delivers "
            "to SQS queues, Lambda functions and faas dead-letter queues only."
        )

    def _require_local(self, target_arn: str, region: str, account_id: str) -> None:
        if region != self._api.region or account_id != self._api.account_id:
            raise InvalidParameterValueException(
                f"The destination ARN {target_arn} belongs to another region or account; this "
                f"node serves {self._api.region} / {self._api.account_id}."
            )

    def validate_target(self, target_arn: str) -> None:
        """Check a target when it is configured.

        Raises:
            InvalidParameterValueException: see ``parse``; or a target function (or its
                version or alias) does not exist (Lambda's answer for a missing one).
        """
        target = self.parse(target_arn)
        if target.kind is TargetKind.FUNCTION:
            try:
                self._versions.describe(target.name, target.qualifier)
            except ResourceNotFoundException as missing:
                raise InvalidParameterValueException(
                    f"The destination ARN {target_arn} is invalid."
                ) from missing

    # --- delivering --------------------------------------------------------------------

    async def deliver(
        self, target_arn: str, body: bytes, attributes: Mapping[str, str] | None = None
    ) -> None:
        """Send ``body`` (with ``attributes`` where the target keeps them) to ``target_arn``.

        Raises:
            InvalidParameterValueException: the ARN is malformed or of an unsupported kind.
            ResourceNotFoundException: a target function no longer exists.
            Exception: whatever the target's transport raised (SQS errors, store errors).
        """
        if self._state is not DeliveryState.RUNNING:
            raise RuntimeError("destination delivery is not running")
        target = self.parse(target_arn)
        attributes = attributes or {}
        if target.kind is TargetKind.FUNCTION:
            await self._deliver_to_function(target, body)
        elif target.kind is TargetKind.STORE_QUEUE:
            await self._store.put_dead_letter(
                DeadLetter(target.name, str(uuid.uuid4()), body, dict(attributes), time.time())
            )
        else:
            await asyncio.wait_for(self._deliver_to_sqs(target, body, attributes), _SQS_TIMEOUT_S)

    async def _deliver_to_function(self, target: Target, body: bytes) -> None:
        config = self._versions.describe(target.name, target.qualifier)
        await self._intake.submit(
            QueuedEvent(
                request_id=str(uuid.uuid4()),
                function_name=config.name,
                qualifier=target.qualifier or LATEST,
                payload=body,
                enqueued_at=time.time(),
            )
        )

    async def _deliver_to_sqs(
        self, target: Target, body: bytes, attributes: Mapping[str, str]
    ) -> None:
        client = await self._sqs_client(target.region)
        url = self._queue_urls.get(target.arn)
        if url is None:
            url = await asyncio.to_thread(_queue_url, client, target.name, target.account_id)
            self._queue_urls[target.arn] = url
        message_attributes = {
            name: {
                "DataType": "Number" if name in NUMBER_ATTRIBUTES else "String",
                "StringValue": value,
            }
            for name, value in attributes.items()
        }
        try:
            await asyncio.to_thread(
                _send_message, client, url, body.decode("utf-8", "replace"), message_attributes
            )
        except Exception:
            self._queue_urls.pop(target.arn, None)  # the queue may have been recreated
            raise

    async def _sqs_client(self, region: str) -> Any:
        async with self._sqs_lock:
            client = self._sqs_clients.get(region)
            if client is None:
                client = await asyncio.to_thread(
                    make_sqs_client, region, self._events.sqs_endpoint_url, 10.0, 3
                )
                self._sqs_clients[region] = client
            return client


def _queue_url(client: Any, queue_name: str, owner_account_id: str) -> str:
    """The URL of the queue ``queue_name`` of ``owner_account_id`` (the ARN's account): a
    queue of another account is not looked up among the caller's own queues."""
    owner = {"QueueOwnerAWSAccountId": owner_account_id} if owner_account_id else {}
    return str(client.get_queue_url(QueueName=queue_name, **owner)["QueueUrl"])


def _send_message(client: Any, url: str, body: str, attributes: dict[str, Any]) -> None:
    client.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
