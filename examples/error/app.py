"""Always raises: shows how a function error looks to the caller.

A sync invoke answers 200 with the header ``X-Amz-Function-Error: Unhandled`` and
the error as the payload; an Event invoke is retried (twice by default).
"""


class GreetingError(Exception):
    """The error this function raises."""


def handler(event, context):
    reason = event.get("reason", "no reason given") if isinstance(event, dict) else "bad event"
    print("about to fail:", reason)
    raise GreetingError(f"refusing to greet: {reason}")
