"""Event source mappings: records, the manager of their lifecycle, and their pollers.

``model`` holds the mapping record and its states, ``manager`` the control-plane
operations and the pollers' lifecycles, ``poller`` the batch loops that receive,
``batches`` the invoking and settling of one batch, ``stream_retry`` the in-place
retry and bisection of stream batches, ``batch_response`` the parsing of partial
batch responses, and ``failure_record`` the on-failure record of a discarded
stream batch.
"""
