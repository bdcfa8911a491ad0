"""Dead letters: the DeadLetterConfig check of CreateFunction / UpdateFunctionConfiguration,
and the node's own dead-letter queues (``GET /faas/v1/dlq/{queue}``, ``POST .../redrive``).

A store queue is named after the function its messages are redriven to; redrive
submits each message body as a fresh Event invoke of that function (`$LATEST`) and
then removes the message. The message id is the new event's request id, so a
redrive interrupted between the two steps and run again does not queue a second
copy of a message still waiting in the event queue.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import web

from faas.api.body import json_response
from faas.api.services import SERVICES, Services
from faas.api.validation import max_items
from faas.errors import InvalidParameterValueException, ValidationException
from faas.events.destinations import TargetKind
from faas.models import LATEST
from faas.store.base import DeadLetter, QueuedEvent

DEAD_LETTER_ARN = re.compile(r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()")
_QUEUE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_LIST_DEFAULT = 100
_LIST_MAX = 1000
_REDRIVE_BATCH = 100


def check_dead_letter_target(services: Services, function_name: str, target_arn: str) -> None:
    """Check a function's ``DeadLetterConfig.TargetArn`` ("" clears it).

    Raises:
        ValidationException: not an ARN.
        InvalidParameterValueException: a target this node cannot reach, a function that
            does not exist, or the function itself.
    """
    if len(target_arn) > 256 or not DEAD_LETTER_ARN.fullmatch(target_arn):
        raise ValidationException(
            f"1 validation error detected: Value '{target_arn}' at 'deadLetterConfig.targetArn' "
            "failed to satisfy constraint: Member must satisfy regular expression pattern: "
            f"{DEAD_LETTER_ARN.pattern}"
        )
    if not target_arn:
        return
    target = services.destinations.parse(target_arn)
    if target.kind is TargetKind.FUNCTION and target.name == function_name:
        raise InvalidParameterValueException("A function cannot be its own dead-letter target.")
    services.destinations.validate_target(target_arn)


def _queue(request: web.Request) -> str:
    queue = request.match_info["queue"]
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValidationException(
            f"1 validation error detected: Value '{queue}' at 'queue' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]{1,64}"
        )
    return queue


def _limit(request: web.Request) -> int:
    return max_items(request.query, _LIST_MAX, _LIST_DEFAULT)


def _message(letter: DeadLetter) -> dict[str, Any]:
    return {
        "MessageId": letter.message_id,
        "Body": letter.body.decode("utf-8", "replace"),
        "Attributes": dict(letter.attributes),
        "SentTimestamp": letter.sent_at,
    }


async def list_dead_letters(request: web.Request) -> web.Response:
    """The oldest messages of a store queue (up to MaxItems) and how many it holds."""
    services = request.app[SERVICES]
    queue = _queue(request)
    letters = await services.dead_letters.list_dead_letters(queue, _limit(request))
    return json_response(
        {
            "QueueArn": services.destinations.store_queue_arn(queue),
            "ApproximateNumberOfMessages": await services.dead_letters.count_dead_letters(queue),
            "Messages": [_message(letter) for letter in letters],
        }
    )


async def redrive_dead_letters(request: web.Request) -> web.Response:
    """Re-enqueue every message as an Event invoke of the queue's function, then remove it.

    Raises:
        ResourceNotFoundException: no function is named like the queue.
    """
    services = request.app[SERVICES]
    queue = _queue(request)
    function = services.catalog.get(queue)
    redriven = await _redrive(services, queue, function.name)
    return json_response(
        {"QueueArn": services.destinations.store_queue_arn(queue), "Redriven": redriven}
    )


async def _redrive(services: Services, queue: str, function_name: str) -> int:
    # Only what the queue holds now: events that fail again and come back are not
    # redriven a second time by the same call.
    remaining = await services.dead_letters.count_dead_letters(queue)
    redriven = 0
    while remaining > 0:
        letters = await services.dead_letters.list_dead_letters(
            queue, min(remaining, _REDRIVE_BATCH)
        )
        if not letters:
            break
        remaining -= len(letters)
        # Submitted together, a batch shares the queue's group commit (one fsync, not one
        # per message); only the messages whose event is durable leave the queue.
        outcomes = await asyncio.gather(
            *(services.dispatcher.submit(_event(letter, function_name)) for letter in letters),
            return_exceptions=True,
        )
        submitted = [
            letter.message_id
            for letter, outcome in zip(letters, outcomes, strict=True)
            if outcome is None
        ]
        await services.dead_letters.delete_dead_letters(queue, submitted)
        redriven += len(submitted)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    return redriven


def _event(letter: DeadLetter, function_name: str) -> QueuedEvent:
    """The Event invoke a message becomes: its id is the request id (see the module notes)."""
    return QueuedEvent(
        request_id=letter.message_id,
        function_name=function_name,
        qualifier=LATEST,
        payload=letter.body,
        enqueued_at=time.time(),
    )
