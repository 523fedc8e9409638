"""The server's core, free of HTTP: the pub/sub hub, its brokers and the JSON message format."""
