"""Chat: the rules, the state interface (embedded, Redis), the session every transport speaks,
history, its journal and the TCP line protocol."""
