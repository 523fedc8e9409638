"""What goes on the wire: the JSON message format and errors, the HTTP transports' forms,
WebSocket close codes."""
