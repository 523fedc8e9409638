"""Real-time apps written once for every transport: the session base and the app state."""
