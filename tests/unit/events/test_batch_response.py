"""Which partial batch responses mean success, partial failure or whole-batch failure."""

from __future__ import annotations

import pytest

from faas.events.mappings.batch_response import reported_failures

BATCH = {"m-1", "m-2", "m-3"}


@pytest.mark.parametrize(
    "payload",
    [b"", b"  ", b"null", b"{}", b'{"batchItemFailures": null}', b'{"batchItemFailures": []}',
     b'{"statusCode": 200}'],
)  # fmt: skip
def test_whole_batch_success(payload: bytes) -> None:
    assert reported_failures(payload, BATCH) == set()


def test_reported_items_fail() -> None:
    payload = b'{"batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-3"}]}'
    assert reported_failures(payload, BATCH) == {"m-2", "m-3"}


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'"done"',
        b"[]",
        b'{"batchItemFailures": {"itemIdentifier": "m-1"}}',
        b'{"batchItemFailures": ["m-1"]}',
        b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
        b'{"batchItemFailures": [{"itemIdentifier": null}]}',
        b'{"batchItemFailures": [{"itemId": "m-1"}]}',
        b'{"batchItemFailures": [{"itemIdentifier": "m-9"}]}',
        b'{"batchItemFailures": [{"itemIdentifier": 1}]}',
    ],
)
def test_invalid_response_fails_the_whole_batch(payload: bytes) -> None:
    assert reported_failures(payload, BATCH) is None
