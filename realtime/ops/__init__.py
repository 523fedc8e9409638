"""Running the server: options, metrics, loop lag, logs, lifecycle, accept loop, open-file
limit, background tasks."""
