"""The on-failure record of stream records a mapping gave up on (metadata only).

Design notes: as for Kinesis on Lambda, the record names the records, it does not
carry them: ``StreamBatchInfo`` (modelled on ``KinesisBatchInfo``) gives the first
and last sequence numbers, their approximate arrival times, the batch size and the
stream's address (without its password), enough to read them back from the stream.
``requestContext.condition`` is ``RetryAttemptsExhausted`` or ``RecordAgeExceeded``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from faas.events.sources.base import SourceRecord
from faas.models import InvocationResult

BATCH_INFO_KEY = "StreamBatchInfo"


def iso_timestamp(epoch_s: float) -> str:
    """``2019-11-14T00:38:06.021Z``."""
    millis = int((epoch_s % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s)) + f".{millis:03d}Z"


def failure_record(
    records: Sequence[SourceRecord],
    condition: str,
    invocations: int,
    function_arn: str,
    stream_address: str,
    last_result: InvocationResult | None,
) -> dict[str, Any]:
    """The on-failure destination record for ``records`` (in stream order)."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": last_result.request_id if last_result else "",
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invocations,
        },
    }
    if last_result is not None:
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": last_result.executed_version,
            "functionError": last_result.function_error or "",
        }
    record["version"] = "1.0"
    record["timestamp"] = iso_timestamp(time.time())
    record[BATCH_INFO_KEY] = {
        "startSequenceNumber": records[0].item_id,
        "endSequenceNumber": records[-1].item_id,
        "approximateArrivalOfFirstRecord": iso_timestamp(records[0].arrived_at),
        "approximateArrivalOfLastRecord": iso_timestamp(records[-1].arrived_at),
        "batchSize": len(records),
        "streamArn": stream_address,
    }
    return record
