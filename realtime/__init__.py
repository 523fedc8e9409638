"""The server's core, free of HTTP handlers: the pub/sub hub and its brokers, the chat and
vote rules and state with their stores, and the operational parts (limits, metrics,
lifecycle)."""
