"""The alert outbox: findings (budgets, detectors, the hub itself) kept in the hub's store and
delivered to the configured sinks (a signed JSON webhook, Slack, ntfy, a program), retried with
backoff until they arrive or are dead-lettered, with silences and acknowledgements.

`Outbox` (the FindingSink) records; `Courier` (run by `fleet-hub serve`) delivers. The HTTP
transport lives in `hub.api` with the rest of the web stack.
"""
