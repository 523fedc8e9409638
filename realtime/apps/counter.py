"""The shared counter: the example real-time app (``realtime.apps.session``), at ``/counter``.

Each counter has a name (``[a-z0-9-]{1,40}``, from the URL) and a value everyone sees
change live, over ``/ws/counter/<name>``, ``/sse/counter/<name>`` and ``POST
/api/counter/<name>``. The value is kept in the app state (``realtime.apps.state``; on Redis
with ``--redis-url``, so every process counts on the same value) and every change is
published on ``counter.<name>``, which the broker carries to every process.

Frames: a connection's welcome is ``{"type": "count", "name", "value"}``, and so is every
change after it. A client sends ``{"type": "increment", "by": n}`` (``by`` an integer from
1 to 100, 1 if absent); a POST of it answers the count frame it caused. Increments only
add, so a value is never lower than one seen before: frames from different processes may
arrive out of order, and a client keeps the highest value it has seen.
"""

from realtime.apps.session import AppSession
from realtime.wire.messages import ClientError, Message

NAME_PATTERN = r"[a-z0-9-]{1,40}"  # a counter's name, as its URLs take it
MAX_STEP = 100  # the largest increment one message may make


class CounterSession(AppSession):
    """One connection to one counter; see the module docstring."""

    name = "counter"

    @property
    def counter(self) -> str:
        """The counter's name (from the URL)."""
        return self.args[0]

    async def opened(self, counter: str) -> None:
        # A change published while the value is read follows the welcome only if the
        # welcome does not count it already (values only grow).
        await self.welcome(self.topic(counter), build=self.count,
                           still_due=lambda welcome, frame: frame["value"] > welcome["value"])

    async def count(self) -> Message:
        """The counter's count frame, as the state has it now."""
        value = await self.state.get(self.counter)
        return self._frame(int(value) if value is not None else 0)

    async def handle_increment(self, message: Message) -> Message:
        """``{"type": "increment", "by": n}``: add ``n`` (1 to 100, default 1) for everyone."""
        by = message.get("by", 1)
        if not isinstance(by, int) or isinstance(by, bool) or not 1 <= by <= MAX_STEP:
            raise ClientError("bad_message", f'"by" must be an integer from 1 to {MAX_STEP}.')
        frame = self._frame(await self.state.incr(self.counter, by))
        self.publish(self.topic(self.counter), frame)
        return frame

    def _frame(self, value: int) -> Message:
        return {"type": "count", "name": self.counter, "value": value}
