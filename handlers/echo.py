"""The echo endpoint: every frame comes back unchanged, text as text and binary as binary."""

from handlers.base import Frame, SocketHandler


class EchoSocketHandler(SocketHandler):
    """``/ws/echo``: sends each frame back to its sender as it came."""

    def received(self, frame: Frame) -> None:
        self.send_frame(frame)
