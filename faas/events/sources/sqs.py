"""The SQS source: long-poll an SQS-compatible queue, delete what succeeded.

Design notes: the queue is named by its ARN, ``arn:aws:sqs:<region>:<account>:<name>``,
and reached at ``EventsConfig.sqs_endpoint_url`` (empty: AWS's own endpoint for the
region); its URL comes from ``GetQueueUrl`` and is looked up again after any error,
in case the queue was recreated.

boto3 is synchronous, so every call runs on a worker thread. The source owns its
own small thread pool rather than borrowing asyncio's default one: a long poll
holds a thread for its whole wait, and several mappings polling at once must not
starve the rest of the node (DNS lookups, other ``to_thread`` users). A long poll
is cut into slices of at most ``LONG_POLL_SLICE_S`` so that ``stop`` returns within
one slice instead of waiting out a 20-second ReceiveMessage.

Settling follows Lambda: ``ack`` deletes (DeleteMessageBatch); ``release`` does
nothing, so a failed message reappears once its visibility timeout ends. That
timeout is the retry delay, and the queue's own redrive policy (``maxReceiveCount``)
moves a poison message to its dead-letter queue after enough receives.

While a batch is in flight (received, not yet acked or released), the source keeps
its messages hidden: every third of the queue's VisibilityTimeout it extends them
by that timeout again (ChangeMessageVisibilityBatch). A handler that runs longer
than the visibility timeout is therefore not handed the same messages a second
time by another batch loop; once the batch is released, or the node stops, the
messages reappear one visibility timeout later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faas.events.sources.base import SourceKind, SourceRecord, SourceSpec, SourceUnavailable
from faas.events.sqs_client import make_sqs_client

log = logging.getLogger(__name__)

LONG_POLL_SLICE_S = 2
# In-flight messages get their visibility extended this many times per visibility timeout.
VISIBILITY_EXTENSIONS_PER_TIMEOUT = 3
# SQS limits: at most 10 messages per ReceiveMessage / DeleteMessageBatch, a 20 s long poll.
_MAX_RECEIVE = 10
_MAX_WAIT_S = 20
_MAX_THREADS = 16
_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:sqs:([a-z]{2}(?:-gov)?-[a-z]+-\d):(\d{12}):([a-zA-Z0-9_-]{1,80})"
)
_FIFO_SUFFIX = ".fifo"
# Record attributes Lambda passes on (FIFO queues add the last three).
_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
)


def parse_arn(address: str) -> tuple[str, str, str]:
    """(region, account id, queue name) of an SQS queue ARN.

    Raises:
        ValueError: ``address`` is not an SQS queue ARN.
    """
    name = address.rsplit(":", 1)[-1]
    base = address[: -len(_FIFO_SUFFIX)] if name.endswith(_FIFO_SUFFIX) else address
    match = _ARN.fullmatch(base)
    if match is None:
        raise ValueError(
            f"{address} is not an SQS queue ARN (arn:aws:sqs:<region>:<account-id>:<queue-name>)."
        )
    return match.group(1), match.group(2), name


def is_fifo(address: str) -> bool:
    return address.endswith(_FIFO_SUFFIX)


def validate(spec: SourceSpec) -> None:
    """Raises ValueError unless ``spec.address`` is an SQS queue ARN."""
    parse_arn(spec.address)


def open_source(spec: SourceSpec) -> SqsSource:
    return SqsSource(spec)


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """An SQS MessageAttributeValue in the lower-camel shape of Lambda's SQS event."""
    shape: dict[str, Any] = {}
    if "StringValue" in value:
        shape["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shape["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    shape["stringListValues"] = list(value.get("StringListValues", []))
    shape["binaryListValues"] = [
        base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
    ]
    shape["dataType"] = value.get("DataType", "String")
    return shape


class SqsSource:
    """One SQS queue, polled on the source's own worker threads."""

    kind = SourceKind.QUEUE

    __slots__ = ("_account_id", "_client", "_executor", "_in_flight", "_keepalive",
                 "_queue_name", "_queue_url", "_region", "_spec", "_stopping",
                 "_visibility_timeout_s")  # fmt: skip

    def __init__(self, spec: SourceSpec) -> None:
        self._spec = spec
        self._region, self._account_id, self._queue_name = parse_arn(spec.address)
        self._executor: ThreadPoolExecutor | None = None
        self._client: Any = None  # a botocore client; botocore is untyped
        self._queue_url: str | None = None
        self._visibility_timeout_s = 0  # the queue's VisibilityTimeout, read with its URL
        self._in_flight: set[str] = set()  # receipt handles received and not yet settled
        self._keepalive: asyncio.Task[None] | None = None
        self._stopping = threading.Event()  # read by worker threads between long-poll slices

    async def _call(self, function: Any, *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("SQS source is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def start(self) -> None:
        """Build the client, resolve the queue URL and read its visibility timeout.

        Raises:
            SourceUnavailable: the endpoint is unreachable or the queue does not exist.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="faas-sqs")
        self._stopping.clear()
        if self._client is None:
            self._client = await self._call(
                make_sqs_client, self._region, self._spec.sqs_endpoint_url,
                LONG_POLL_SLICE_S + 10, 2,  # the read timeout outlasts a long-poll slice
            )  # fmt: skip
        await self._call(self._resolve_url)
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(
                self._keep_in_flight_hidden(), name=f"sqs-visibility-{self._queue_name}"
            )

    async def stop(self) -> None:
        """Stop polling; waits at most one long-poll slice for worker threads to finish."""
        self._stopping.set()
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        self._in_flight.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        messages = await self._call(self._receive_blocking, max_records, wait_s)
        records = [self._record(message) for message in messages]
        self._in_flight.update(str(record.token) for record in records)
        return records

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        """Delete the messages (DeleteMessageBatch, ten at a time).

        Raises:
            SourceUnavailable: a delete request failed (the messages will come back).
        """
        handles = [str(record.token) for record in records]
        self._in_flight.difference_update(handles)
        for start in range(0, len(handles), _MAX_RECEIVE):
            await self._call(self._delete_blocking, handles[start : start + _MAX_RECEIVE])

    async def release(self, records: Sequence[SourceRecord]) -> None:
        """Stop hiding the messages: they reappear when their visibility timeout ends."""
        self._in_flight.difference_update(str(record.token) for record in records)

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        return {"Records": [record.shape for record in records]}

    async def _keep_in_flight_hidden(self) -> None:
        """Every third of the visibility timeout, extend the in-flight messages by it again."""
        next_tick = time.monotonic()
        while True:
            timeout_s = self._visibility_timeout_s
            # A queue without a visibility timeout hides nothing; look again now and then.
            next_tick += timeout_s / VISIBILITY_EXTENSIONS_PER_TIMEOUT if timeout_s else 1.0
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            if not self._in_flight or not timeout_s:
                continue
            handles = list(self._in_flight)
            try:
                for start in range(0, len(handles), _MAX_RECEIVE):
                    chunk = handles[start : start + _MAX_RECEIVE]
                    await self._call(self._extend_blocking, chunk, timeout_s)
            except Exception as exc:  # task boundary: the next tick tries again
                log.warning("SQS queue %s: extending in-flight messages failed: %s",
                            self._queue_name, exc)  # fmt: skip

    # --- worker-thread side ----------------------------------------------------------------

    def _resolve_url(self) -> str:
        if self._queue_url is None:
            try:
                response = self._client.get_queue_url(
                    QueueName=self._queue_name, QueueOwnerAWSAccountId=self._account_id
                )
                url = str(response["QueueUrl"])
                attributes = self._client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["VisibilityTimeout"]
                )["Attributes"]
            except Exception as exc:  # botocore raises many types; all mean "not reachable now"
                raise SourceUnavailable(f"SQS queue {self._queue_name}: {exc}") from exc
            self._visibility_timeout_s = int(attributes.get("VisibilityTimeout", 30))
            self._queue_url = url
        return self._queue_url

    def _extend_blocking(self, receipt_handles: list[str], timeout_s: int) -> None:
        """Hide the messages for ``timeout_s`` more; settled ones (now invalid) are skipped."""
        entries = [
            {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": timeout_s}
            for index, handle in enumerate(receipt_handles)
        ]
        try:
            self._client.change_message_visibility_batch(QueueUrl=self._resolve_url(),
                                                         Entries=entries)  # fmt: skip
        except Exception as exc:  # botocore raises many types; all mean "not reachable now"
            raise SourceUnavailable(f"SQS queue {self._queue_name}: {exc}") from exc

    def _receive_blocking(self, max_records: int, wait_s: float) -> list[dict[str, Any]]:
        url = self._resolve_url()
        deadline = time.monotonic() + min(wait_s, _MAX_WAIT_S)
        while True:
            remaining = deadline - time.monotonic()
            # WaitTimeSeconds is whole seconds: round up so a short wait never spins.
            slice_s = 0 if remaining <= 0 else min(LONG_POLL_SLICE_S, math.ceil(remaining))
            try:
                response = self._client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=max(1, min(_MAX_RECEIVE, max_records)),
                    WaitTimeSeconds=slice_s,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # botocore raises many types; all mean "not reachable now"
                self._queue_url = None  # the queue may have been deleted and recreated
                raise SourceUnavailable(f"SQS queue {self._queue_name}: {exc}") from exc
            messages: list[dict[str, Any]] = response.get("Messages", [])
            if messages or remaining <= slice_s or self._stopping.is_set():
                return messages

    def _delete_blocking(self, receipt_handles: list[str]) -> None:
        url = self._resolve_url()
        entries = [
            {"Id": str(index), "ReceiptHandle": handle}
            for index, handle in enumerate(receipt_handles)
        ]
        try:
            response = self._client.delete_message_batch(QueueUrl=url, Entries=entries)
        except Exception as exc:  # botocore raises many types; all mean "not reachable now"
            self._queue_url = None
            raise SourceUnavailable(f"SQS queue {self._queue_name}: {exc}") from exc
        failed = response.get("Failed") or []
        if failed:
            raise SourceUnavailable(
                f"SQS queue {self._queue_name}: {len(failed)} deletes failed: "
                + "; ".join(str(entry.get("Message", entry.get("Code"))) for entry in failed)
            )

    def _record(self, message: dict[str, Any]) -> SourceRecord:
        attributes = message.get("Attributes", {})
        shape = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": {key: attributes[key] for key in _ATTRIBUTES if key in attributes},
            "messageAttributes": {
                name: _message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._spec.address,
            "awsRegion": self._region,
        }
        sent_ms = attributes.get("SentTimestamp")
        arrived_at = int(sent_ms) / 1000 if sent_ms else time.time()
        return SourceRecord(message["MessageId"], shape, arrived_at, message["ReceiptHandle"])
