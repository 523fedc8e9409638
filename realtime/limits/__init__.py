"""Protecting the server: rate limits, per-address caps, origins, admission."""
