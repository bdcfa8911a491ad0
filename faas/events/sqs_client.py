"""boto3 SQS clients for SQS ARNs: mapping sources, dead-letter queues and destinations.

Design notes: building a client reads files and takes about 50 ms, so callers build
it on a worker thread, once. boto3 itself is imported here, on first use: only a node
that talks to SQS pays for loading it. With an endpoint configured (a local
SQS-compatible server), credentials come from the environment or the shared files,
never from the cloud metadata service: asking it would cost every client a network
round trip, and a connect timeout on a host without one. The local server needs a
signature but accepts any key, so with no credentials found a dummy key signs.
"""

from __future__ import annotations

from typing import Any

# Credential providers that ask the cloud metadata service over the network.
_METADATA_PROVIDERS = ("container-role", "iam-role")
_DUMMY_KEY = {"aws_access_key_id": "faas", "aws_secret_access_key": "faas"}


def make_sqs_client(region: str, endpoint_url: str, read_timeout_s: float, attempts: int) -> Any:
    """A boto3 SQS client for ``region`` at ``endpoint_url`` (empty: AWS's own endpoint).

    Blocking: call it on a worker thread.
    """
    import boto3
    import botocore.session
    from botocore.config import Config

    core_session = botocore.session.Session()
    credentials: dict[str, str] = {}
    if endpoint_url:
        resolver = core_session.get_component("credential_provider")
        for provider in _METADATA_PROVIDERS:
            resolver.remove(provider)
        if core_session.get_credentials() is None:
            credentials = _DUMMY_KEY
    session = boto3.session.Session(botocore_session=core_session)
    return session.client(
        "sqs",
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=Config(connect_timeout=5, read_timeout=read_timeout_s,
                      retries={"max_attempts": attempts, "mode": "standard"}),
        **credentials,
    )  # fmt: skip
