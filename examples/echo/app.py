"""Returns the event it was invoked with, unchanged."""


def handler(event, context):
    return event
