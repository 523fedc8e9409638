"""Live polls: what a poll is, and the stores (SQLite, Redis)."""
