from __future__ import annotations

import re
import uuid

from faas.ids import new_request_id, new_trace_id


def test_request_ids_are_version_4_uuids() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower case, dashed
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_trace_ids_have_xrays_shape() -> None:
    with_parent = new_trace_id(0x5F000000)
    assert re.fullmatch(r"Root=1-5f000000-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", with_parent)
    root_only = new_trace_id(parent=False)
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Sampled=0", root_only)
    assert new_trace_id(0) != new_trace_id(0)
