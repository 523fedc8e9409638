"""Accepting TCP connections when the process runs out of file descriptors.

Tornado's accept loop (``tornado.netutil.add_accept_handler``) lets ``EMFILE`` escape to
the IOLoop, which logs it with a traceback and calls the handler again at once: the
connection waiting in the kernel's queue keeps the listening socket readable, so the
process spins at full CPU writing the same error thousands of times a second (165,000
lines, 108 MB, in 12 s under ``ulimit -n 256``), and serves nobody.

Here an accept that fails for want of descriptors stops watching the listening socket for
``RETRY_DELAY`` seconds, then tries again; the waiting clients stay queued in the kernel
and are served once descriptors free up (an idle connection timing out, a client leaving).
The failure is logged at most once per ``LOG_INTERVAL`` with the count of repeats held
back, and the recovery once. The only Tornado internals used are the ones
``TCPServer.add_sockets`` itself uses, through ``realtime.pubsub.tornado_internals``, and only in
``PausingAccept.add_sockets`` below, which the HTTP server and the raw TCP chat server
(``handlers.tcp``) both use.
"""

import errno
import logging
import socket
from typing import Any, Callable, Iterable, Optional, cast

import tornado.httpserver
from tornado.ioloop import IOLoop
from tornado.tcpserver import TCPServer

from realtime.ops.logfmt import LOG_INTERVAL, ThrottledLog
from realtime.pubsub.tornado_internals import add_listening_socket

__all__ = ["Acceptor", "HTTPServer", "LOG_INTERVAL", "PausingAccept", "ThrottledLog",
           "start_accepting"]

log = logging.getLogger("realtime.accept")

# Seconds the listening socket is left alone after running out of descriptors: long enough
# not to burn CPU, short enough that a queued client barely notices once one frees up.
RETRY_DELAY = 0.25
# Connections accepted per readable event before yielding to the rest of the loop (Tornado
# takes 128, its default listen backlog). A reconnect storm fills the kernel's queue faster
# than a busy loop comes back to it 128 at a time, and a connection that finds the queue
# full has its SYN dropped and waits 1, 3, 7... s for TCP to retry: taking the whole queue
# costs a few ms of loop time and keeps every client waiting in order instead.
ACCEPTS_PER_EVENT = 4096
# accept() errors that mean "no descriptor or kernel memory for one more socket right
# now": the process limit, the system limit, and two the man page lists for exhausted
# socket memory. Any other error is a bug and still reaches the IOLoop's handler.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts connections on one listening socket for ``callback(connection, address)``,
    pausing instead of spinning when descriptors run out. ``close()`` stops it.

    Pauses and recoveries are each logged at most once per ``LOG_INTERVAL``: at the limit,
    every descriptor freed lets one accept through before the next failure, and a server
    flapping like that must not log per connection either.
    """

    def __init__(self, sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                 retry_delay: float = RETRY_DELAY, failures: Optional[ThrottledLog] = None,
                 recoveries: Optional[ThrottledLog] = None) -> None:
        self.sock = sock
        self.callback = callback
        self.retry_delay = retry_delay
        self.failures = failures or ThrottledLog(log)
        self.recoveries = recoveries or ThrottledLog(log)
        self.io_loop = IOLoop.current()
        self.refused = 0  # accepts that failed since the last one that worked
        self._retry: Optional[object] = None  # the IOLoop timeout while paused
        self._closed = False
        self.io_loop.add_handler(sock, self._on_readable, IOLoop.READ)

    def _on_readable(self, fd: Any, events: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            if self._closed:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return  # every queued connection is taken
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise
                self._pause(exc)
                return
            if self.refused:
                self.recoveries.warning(event="accept_resumed", refused=self.refused)
                self.refused = 0
            self.callback(connection, address)

    def _pause(self, exc: OSError) -> None:
        self.refused += 1
        self.failures.warning(
            event="accept_paused", error=errno.errorcode.get(exc.errno or 0, exc.errno),
            reason=exc.strerror, retry_s=self.retry_delay,
        )
        self.io_loop.remove_handler(self.sock)
        self._retry = self.io_loop.call_later(self.retry_delay, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self.io_loop.add_handler(self.sock, self._on_readable, IOLoop.READ)

    def close(self) -> None:
        """Stop accepting (the socket itself is the caller's to close)."""
        self._closed = True
        if self._retry is not None:
            self.io_loop.remove_timeout(self._retry)
            self._retry = None
        else:
            self.io_loop.remove_handler(self.sock)


def start_accepting(sock: socket.socket, handle: Callable[[socket.socket, Any], None]
                    ) -> Callable[[], None]:
    """Accept on ``sock`` through an ``Acceptor``, handing connections to ``handle``; returns
    what stops it."""
    return Acceptor(sock, handle).close


class PausingAccept:
    """Mixed into a Tornado ``TCPServer`` (before it): accepts through an ``Acceptor``, so
    running out of descriptors pauses accepting and is logged once a second, instead of
    spinning and flooding the log."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Start accepting on ``sockets`` (as ``TCPServer.add_sockets``, whose bookkeeping
        ``stop()`` relies on)."""
        server = cast(TCPServer, self)  # a mixin: self is the TCPServer it is mixed into
        for sock in sockets:
            add_listening_socket(server, sock, start_accepting)


class HTTPServer(PausingAccept, tornado.httpserver.HTTPServer):
    """Tornado's HTTP server, accepting through an ``Acceptor`` (``PausingAccept``)."""
