"""Publish and subscribe: the hub, envelopes, brokers (in process, Redis) and the fast path
into Tornado's streams."""
