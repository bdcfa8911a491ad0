"""Shows what a handler learns from the Lambda context object and environment."""

import logging
import os

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    logger.info("invoked with %s", event)
    print("remaining ms:", context.get_remaining_time_in_millis())
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_time_ms": context.get_remaining_time_in_millis(),
        "region": os.environ["AWS_REGION"],
        "greeting": os.environ.get("GREETING", ""),
    }
