"""What the stores share: the SQLite worker, Redis outage bookkeeping."""
