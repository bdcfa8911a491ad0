"""Render stored values in the exact JSON shapes botocore's Lambda model expects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faas.models import FunctionConfig


def function_configuration(
    config: FunctionConfig, function_arn: str, layers: Sequence[tuple[str, int]] = ()
) -> dict[str, Any]:
    """A FunctionConfiguration, members in botocore's order (lambda-compat.md A.4).

    Args:
        layers: ``(Arn, CodeSize)`` of each of the function's layers, in order.
    """
    shape: dict[str, Any] = {
        "FunctionName": config.name,
        "FunctionArn": function_arn,
        "Runtime": config.runtime,
        "Role": config.role,
        "Handler": config.handler,
        "CodeSize": config.code_size,
        "Description": config.description,
        "Timeout": config.timeout_s,
        "MemorySize": config.memory_mb,
        "LastModified": config.last_modified,
        "CodeSha256": config.code_sha256,
        "Version": config.version,
    }
    if config.dead_letter_target_arn:
        shape["DeadLetterConfig"] = {"TargetArn": config.dead_letter_target_arn}
    if config.environment:
        shape["Environment"] = {"Variables": dict(config.environment)}
    shape["TracingConfig"] = {"Mode": config.tracing_mode}
    shape["RevisionId"] = config.revision_id
    if layers:
        shape["Layers"] = [{"Arn": arn, "CodeSize": size} for arn, size in layers]
    shape.update(
        {
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": list(config.architectures),
            "EphemeralStorage": {"Size": config.ephemeral_storage_mb},
            "SnapStart": {
                "ApplyOn": config.snap_start,
                "OptimizationStatus": "On" if config.uses_snap_start else "Off",
            },
            "LoggingConfig": {
                "LogFormat": config.log_format,
                "LogGroup": f"/aws/lambda/{config.name}",
            },
        }
    )
    return shape
