"""HTTP and WebSocket handlers: one module per endpoint family, plus the shared base classes."""
