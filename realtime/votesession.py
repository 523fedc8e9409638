"""One connection's view of one poll, whatever carries it: ``VoteSession``.

The vote socket ``/ws/vote/<id>`` and the event stream ``/sse/vote/<id>`` are the same
conversation with the poll store and the hub: find the poll before the handshake is
answered, read its snapshot and join its topic so that no tally is missed or repeated, send
the ``poll`` frame; and, on the socket, vote: the store counts it, the poll's topic hears the
tally, the voter gets ``voted`` with it. ``VoteSession`` is that choreography, written once.
It does no I/O of its own: it awaits the ``Polls`` store (which may be Redis), subscribes its
``Connection`` to the hub, and hands the frames meant for its connection alone to the
``send`` callable it was given, which each transport turns into its own wire form (a JSON
frame, an event). A refusal is a ``ClientError`` raised for the transport to answer in its
own form. So it is tested without a server (tests/test_votesession.py).

Ordering. The snapshot is read, then the topic joined, with no await in between, and a vote
publishes its tally as soon as the store hands it back, with no await in between either.
Either store runs a process's jobs one at a time and hands back their results in order, so
every vote of this process committed before the snapshot was read has published its tally
before the subscribe (it is in the snapshot, not a tally), and every later one publishes
after it (a tally): the ``poll`` frame comes first and no tally is missed or repeated. So
no frame has to be held (``Hub.hold``) while the first frame is built: nothing can reach the
connection between the subscribe and the ``poll`` frame. Other processes' tallies come
through the broker, in their own order.

Voter identity (the signed cookie) is the transport's to read; the session is given it.
"""

from typing import Optional

from realtime.hub import Connection, Hub, Send
from realtime.messages import ClientError, Message
from realtime.polls import Polls, refused
from realtime.pollspec import POLL_ID_MAX, Poll


def poll_topic(poll_id: str) -> str:
    """The hub topic of one poll's tallies and state changes (``closed``, ``reopened``,
    ``deleted``)."""
    return f"vote.{poll_id}"


async def find_poll(store: Polls, poll_id: str) -> Optional[Poll]:
    """The poll with that id, or None; absurdly long ids are not looked up."""
    return await store.get(poll_id) if len(poll_id) <= POLL_ID_MAX else None


class VoteSession:
    """One connection's view of one poll; see the module docstring.

    Args:
        store: the poll store (SQLite or Redis).
        hub: where the poll's tallies are published and the connection subscribes.
        connection: the connection as the hub knows it; it subscribes nothing once its
            client has left (an await here may outlast it).
        send: writes a frame to this connection alone (the ``poll`` frame, ``voted``).
        poll_id: the poll, as the request named it.
        voter: the voter id of the request's cookie, or None.
    """

    def __init__(
        self, store: Polls, hub: Hub, connection: Connection, send: Send, poll_id: str,
        voter: Optional[str] = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.connection = connection
        self.send = send
        self.poll_id = poll_id
        self.voter = voter
        # The poll as last read (options never change; counts come from the store).
        self.poll: Optional[Poll] = None

    async def find(self) -> Optional[Poll]:
        """Look the poll up before the handshake is answered; None if there is none (each
        transport refuses in its own form: a 404, a JSON error)."""
        self.poll = await find_poll(self.store, self.poll_id)
        return self.poll

    async def open(self) -> Message:
        """Send the ``poll`` frame (the poll with its counts, and the option this voter
        chose, if any) and from then on every frame published on the poll's topic;
        returns the ``poll`` frame. See Ordering in the module docstring.

        Raises:
            ClientError: ``no_such_poll`` if the poll was deleted since it was found.
        """
        snapshot = await self.store.snapshot(self.poll_id, self.voter)
        if snapshot is None:
            raise ClientError("no_such_poll", "This poll no longer exists.")
        self.poll, voted = snapshot
        self.connection.subscribe(poll_topic(self.poll_id))  # no await since the snapshot
        frame: Message = {"type": "poll", "poll": self.poll.to_json(), "voted": voted}
        self.send(frame)
        return frame

    async def vote(self, option: str) -> Message:
        """Count a vote for ``option``, publish the poll's counts, then tell this voter it
        counted, with the counts that include it; returns the ``voted`` frame.

        The acknowledgement carries the counts with this vote in them, so what it means
        does not hang on how the broadcast travels: through another process it may come
        before or after this frame.

        Raises:
            ClientError: ``no_such_option`` (checked before the store is asked, which
                checks again), ``no_such_poll``, ``poll_closed``, ``no_voter_id``,
                ``already_voted`` (``realtime.polls.VOTE_REFUSALS``), ``unavailable``.
        """
        poll = self.poll
        assert poll is not None, "a vote before the poll was found"
        if option not in poll.option_ids():
            raise refused("no_such_option")
        tally = await self.store.vote(poll.id, option, self.voter)
        counts = tally.to_json()
        self.hub.publish(poll_topic(poll.id), counts)  # no await since the commit: in order
        voted: Message = {"type": "voted", "option": option, "tally": counts}
        self.send(voted)
        return voted
