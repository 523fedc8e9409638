"""The echo endpoint: every frame comes back unchanged, text as text and binary as binary."""

from handlers.websocket import Frame, SocketHandler


class EchoSocketHandler(SocketHandler):
    """``/ws/echo``: sends each frame back to its sender as it came.

    Nothing else is ever written: a frame over the rate limit is dropped without an error
    frame (a raw client could not tell one from an echo), and a client that keeps sending
    past the limit is closed with 1008 after the strikes.
    """

    error_frames = False

    def connected(self) -> None:
        # Each answer goes out at once (TCP_NODELAY), as asyncio servers do by default:
        # an echo is a round trip someone waits on, not a stream worth coalescing.
        self.set_nodelay(True)

    def received(self, frame: Frame) -> None:
        self.send_frame(frame)
