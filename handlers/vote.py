"""Live voting: the poll pages, the JSON API, the ``/ws/vote/<id>`` socket and the
``/sse/vote/<id>`` event stream.

Votes go through a poll store (``realtime.votes.store.Polls``: SQLite, or Redis to share polls
between processes), which makes each vote durable before its tally is published on the topic
``vote.<poll id>``. What the socket and the event stream say to the store and the hub (the
first frame, the tallies, a vote) is ``realtime.votes.session.VoteSession``'s, written once;
the handlers here read requests and write frames. The voter is a random id in a signed
cookie, issued by the vote pages, the same for every poll; only one-vote polls need it.

A poll's creator manages it with the token the creation answered: close, reopen, reveal and
delete take it as ``Authorization: Bearer <token>`` and publish ``closed``, ``reopened``,
``revealed`` or ``deleted`` on the poll's topic, so every open page follows; duplicate, the
CSV export and the owner check take it too. ``POST /api/polls/<id>/vote`` votes without a
socket, through the same ``cast_vote`` as the socket; ``/j/<code>`` and ``/vote?code=`` lead
to a poll by its join code.
"""

import csv
import hashlib
import io
import json
import secrets
from collections import OrderedDict
from typing import Any, NamedTuple, Optional

import segno
import tornado.httputil
import tornado.web

from handlers.cookies import read_cookie, write_cookie
from handlers.errors import RETRY_AFTER_UNAVAILABLE, ApiError, json_error
from handlers.http import BaseHandler, unavailable_status
from handlers.http import EventStreamHandler
from handlers.websocket import JsonSocketHandler
from realtime.limits.ratelimit import KeyedLimiter, retry_after_header
from realtime.pubsub.hub import Hub
from realtime.votes.ids import normalize_code
from realtime.votes.participants import ParticipantCounts
from realtime.votes.session import VoteSession, cast_vote, find_poll, poll_frame, poll_topic
from realtime.votes.spec import POLL_ID_MAX, NewPoll, Poll, PollFieldError, validate_new_poll
from realtime.votes.store import Choice, Polls
from realtime.wire.messages import ClientError, Message, is_unavailable, require_str

VOTER_COOKIE = "voter"
VOTER_COOKIE_DAYS = 365

QR_MAX_AGE = 86400  # seconds a QR code may be cached: a poll's URL never changes
# QR codes kept drawn: one per poll and host its pages are reached by; drawing one costs
# ~3.4 ms of CPU, a lookup next to nothing, so a flood of qr.svg costs lookups.
QR_CACHE_ENTRIES = 256


def ballot_of(message: Message) -> Choice:
    """What a vote names: ``"option": "<id>"``, or ``"options": ["<id>", ...]`` (multiple
    choice). Raises ``bad_message`` if it names neither as strings."""
    options = message.get("options")
    if options is None:
        return require_str(message, "option")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ClientError("bad_message", '"options" must be a list of option ids.')
    return tuple(options)


def bearer_token(request: tornado.httputil.HTTPServerRequest) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def voter_id(handler: tornado.web.RequestHandler) -> Optional[str]:
    """The voter id of the request's signed cookie, or None if it has none that is valid
    (``__Host-voter`` over HTTPS, or the old ``voter``: ``handlers.cookies``)."""
    return read_cookie(handler, VOTER_COOKIE, max_age_days=VOTER_COOKIE_DAYS)[0]


def issue_voter_cookie(handler: tornado.web.RequestHandler) -> None:
    """Give the browser a voter id unless it already has a valid one under the current name;
    one under the old name is written again under the new one, the same voter."""
    voter, current = read_cookie(handler, VOTER_COOKIE, max_age_days=VOTER_COOKIE_DAYS)
    if voter is not None and current:
        return
    write_cookie(handler, VOTER_COOKIE, voter or secrets.token_urlsafe(18), signed=True,
                 expires_days=VOTER_COOKIE_DAYS)


class VoteSocketHandler(JsonSocketHandler):
    """``/ws/vote/<id>``: a ``poll`` snapshot first, then every ``tally`` of the poll.

    A client sends ``{"type": "vote", "option": "<option id>"}``; once the vote is committed
    every client of the poll gets the full counts, and the voter then gets ``voted``. The
    conversation is the ``VoteSession``'s; this object reads frames and writes them.
    """

    store: Polls
    session: VoteSession

    def initialize(self, store: Polls, participants: Optional[ParticipantCounts] = None,
                   **base: Any) -> None:
        """Take the store and the participant counts besides the base class's
        dependencies."""
        super().initialize(**base)
        self.store = store
        self.participants = participants

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        # The poll lookup of the handshake may find the store down: a 503 to retry.
        super().send_error(unavailable_status(status_code, kwargs), **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not is_unavailable(value):  # the store logs its outage once
            super().log_exception(typ, value, tb)

    async def before_open(self, poll_id: str) -> None:
        self.session = VoteSession(
            self.store, self.hub, self, self.send, poll_id, voter_id(self), self.participants)
        # Unknown poll: a 404 at the handshake, before anything is upgraded.
        if await self.session.find() is None:
            raise tornado.web.HTTPError(404)

    async def connected(self, poll_id: str) -> None:
        await self.session.open()

    def disconnected(self) -> None:
        self.session.left()

    async def handle_vote(self, message: Message) -> None:
        """``{"type": "vote", "option": ...}``: count a vote; the poll hears the counts, the
        voter gets ``voted``."""
        await self.session.vote(ballot_of(message))
        self.metrics.votes.inc()


class VoteEventStreamHandler(EventStreamHandler):
    """``GET /sse/vote/<id>``: what the vote socket broadcasts, as Server-Sent Events: the
    ``poll`` frame first, then every ``tally``, ``closed``, ``reopened`` and ``deleted``
    (none has an id: a reconnect starts again from the poll). Votes go through the socket
    or the page; an unknown poll is a 404 before the stream starts."""

    store: Polls
    session: VoteSession

    def initialize(  # type: ignore[override]
        self, store: Polls, participants: Optional[ParticipantCounts] = None, **base: Any
    ) -> None:
        super().initialize(**base)
        self.store = store
        self.participants = participants
        self.session: Optional[VoteSession] = None

    async def before_open(self, poll_id: str) -> None:
        self.session = VoteSession(
            self.store, self.hub, self, self.send, poll_id, voter_id(self), self.participants)
        if await self.session.find() is None:
            raise ClientError("no_such_poll", "There is no poll with this id.")

    async def opened(self, poll_id: str) -> None:
        assert self.session is not None
        await self.session.open()

    def closed(self) -> None:
        if self.session is not None:
            self.session.left()


class ApiHandler(BaseHandler):
    """Base of the JSON API: JSON errors, no caching."""

    store: Polls

    def initialize(self, store: Polls) -> None:
        self.store = store

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write(json_error(self, kwargs))  # handlers/errors.py, as the transports do

    async def existing_poll(self, poll_id: str) -> Poll:
        """The poll, or a 404 ``no_such_poll``."""
        poll = await find_poll(self.store, poll_id)
        if poll is None:
            raise ApiError(404, "no_such_poll", "There is no poll with this id.")
        return poll


class ManageApiHandler(ApiHandler):
    """Base of the requests only a poll's creator may make: its manage token as a bearer
    token, else 403 ``not_owner``; 404 ``no_such_poll`` for an unknown poll."""

    hub: Hub

    def initialize(self, store: Polls, hub: Hub) -> None:  # type: ignore[override]
        super().initialize(store)
        self.hub = hub

    async def check_owner(self, poll_id: str) -> None:
        """Raise the 404 or 403 unless the request carries the poll's manage token."""
        owner = None
        if len(poll_id) <= POLL_ID_MAX:
            owner = await self.store.is_owner(poll_id, bearer_token(self.request))
        if owner is None:
            raise ApiError(404, "no_such_poll", "There is no poll with this id.")
        if not owner:
            raise ApiError(
                403, "not_owner",
                "Only the poll's creator can do this: send its manage token as "
                "Authorization: Bearer <token>.",
            )


@tornado.web.stream_request_body
class JsonBodyApiHandler(ApiHandler):
    """Base of the API's POSTs: a JSON body, streamed so an oversized one is refused
    before it is read into memory; ``json_body()`` parses it."""

    def initialize(self, store: Polls) -> None:
        super().initialize(store)

    async def prepare(self) -> None:
        await super().prepare()  # the request budget; a body over the limit is a 413
        if self.request.method != "POST":
            return
        # A cross-site HTML form can only send form or text bodies; demanding JSON means no
        # other site can create polls or vote in a visitor's name (and fetch() from another origin
        # would need a CORS preflight, which we never grant).
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")

    def json_body(self) -> Any:
        """The body, parsed; a 400 ``bad_json`` if it is not JSON."""
        try:
            return json.loads(self.body())
        except (ValueError, RecursionError):
            raise ApiError(400, "bad_json", "The body is not valid JSON.") from None


class PollsApiHandler(JsonBodyApiHandler):
    """``GET /api/polls`` lists the newest polls; ``POST /api/polls`` creates one."""

    limiter: KeyedLimiter

    def initialize(self, store: Polls, limiter: KeyedLimiter) -> None:  # type: ignore[override]
        super().initialize(store)
        self.limiter = limiter

    async def get(self) -> None:
        polls = await self.store.recent()
        self.write({"polls": [poll.to_json() for poll in polls]})

    head = get

    async def post(self) -> None:
        body = self.json_body()
        try:
            new = validate_new_poll(body)
        except PollFieldError as error:
            raise ApiError(
                400, error.code, error.message, field=error.field,
                # Several problems: all of them, so a form shows each beside its field.
                errors=([problem.to_json() for problem in error.problems]
                        if len(error.problems) > 1 else None),
            ) from None
        except ClientError as error:
            raise ApiError(400, error.code, error.message) from None
        take_creation(self)
        poll, token = await self.store.create(new)
        created(self, poll, token)


def take_creation(handler: Any) -> None:
    """Count a new poll against the client's creation limit (``handler.limiter``), or
    refuse it with 429 ``rate_limited``."""
    ip = handler.request.remote_ip
    if not handler.limiter.take(ip):
        wait = retry_after_header(handler.limiter.retry_after(ip))
        raise ApiError(
            429, "rate_limited", f"Too many new polls; try again in {wait} s.",
            {"Retry-After": wait},
        )


def created(handler: tornado.web.RequestHandler, poll: Poll, token: str) -> None:
    """Answer a new poll: 201, its ``Location``, the poll and its manage token."""
    handler.set_status(201)
    handler.set_header("Location", handler.reverse_url("api_poll", poll.id))
    # The token is answered this once and never logged; the page keeps it in the URL's
    # fragment (/vote/<id>#manage=<token>), which browsers never send to a server.
    handler.write({**poll.to_json(), "manage_token": token})


# The HTTP status of each refused vote (the socket answers the same codes in error frames).
VOTE_STATUS = {
    "no_such_poll": 404,
    "poll_closed": 403,
    "already_voted": 409,
    "no_such_option": 400,
    "no_voter_id": 400,
    "too_many_choices": 400,
    "unavailable": 503,
}


class VoteApiHandler(JsonBodyApiHandler):
    """``POST /api/polls/<id>/vote`` with ``{"option": "<id>"}``: a vote without a socket,
    with the same voter cookie, rules and error codes; answers the ``voted`` frame (the
    tally with this vote in it) and publishes the tally to every page of the poll."""

    hub: Hub
    metrics: Any

    def initialize(  # type: ignore[override]
        self, store: Polls, hub: Hub, metrics: Any,
        participants: Optional[ParticipantCounts] = None,
    ) -> None:
        super().initialize(store)
        self.hub = hub
        self.metrics = metrics
        self.participants = participants

    async def post(self, poll_id: str) -> None:
        body = self.json_body()
        try:
            ballot = ballot_of(body if isinstance(body, dict) else {})
        except ClientError:
            raise ApiError(400, "bad_request", 'Send {"option": "<option id>"} or {"options": '
                           '["<option id>", ...]}.', field="option") from None
        poll = await self.existing_poll(poll_id)
        try:
            voted = await cast_vote(
                self.store, self.hub, poll, ballot, voter_id(self), self.participants)
        except ClientError as error:
            status = VOTE_STATUS.get(error.code, 400)
            headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE} if status == 503 else None
            raise ApiError(status, error.code, error.message, headers) from None
        self.metrics.votes.inc()
        self.write(voted)


class PollApiHandler(ManageApiHandler):
    """``GET /api/polls/<id>``: one poll with its counts (while its results are hidden,
    only with the manage token); ``DELETE`` (creator only) removes it with its votes,
    answers 204 and publishes ``deleted``."""

    async def get(self, poll_id: str) -> None:
        poll = await self.existing_poll(poll_id)
        # Hidden results: the counts only for the owner's token.
        owner = poll.hidden and await self.store.is_owner(poll_id, bearer_token(self.request))
        self.write(poll.to_json(reveal=bool(owner)))

    head = get

    async def delete(self, poll_id: str) -> None:
        await self.check_owner(poll_id)
        if await self.store.delete(poll_id):
            self.hub.publish(poll_topic(poll_id), {"type": "deleted", "poll": poll_id})
        self.set_status(204)


class OwnerApiHandler(ManageApiHandler):
    """``GET /api/polls/<id>/owner``: 200 ``{"owner": true}`` if the bearer token is the
    poll's manage token (403 ``not_owner`` if not), so a browser that opens a manage link
    checks it before keeping it."""

    async def get(self, poll_id: str) -> None:
        await self.check_owner(poll_id)
        self.write({"owner": True})


class DuplicateApiHandler(ManageApiHandler):
    """``POST /api/polls/<id>/duplicate`` (creator only): a new poll with the same question,
    options and settings and no votes, answered as ``POST /api/polls`` answers (201, with
    its own ``manage_token``); counted against the same creation limit."""

    limiter: KeyedLimiter

    def initialize(  # type: ignore[override]
        self, store: Polls, hub: Hub, limiter: KeyedLimiter
    ) -> None:
        super().initialize(store, hub)
        self.limiter = limiter

    async def post(self, poll_id: str) -> None:
        await self.check_owner(poll_id)
        poll = await self.existing_poll(poll_id)
        take_creation(self)
        copy, token = await self.store.create(NewPoll(
            poll.title, tuple(option.label for option in poll.options),
            one_vote_per_voter=poll.one_vote_per_voter, listed=poll.listed,
            results=poll.results, allow_change=poll.allow_change, max_choices=poll.max_choices,
        ))
        created(self, copy, token)


class ResultsCsvHandler(ManageApiHandler):
    """``GET /api/polls/<id>/results.csv`` (creator only): the counts as CSV, one row per
    option (``option,label,votes,percent``), for a spreadsheet; hidden results included."""

    async def get(self, poll_id: str) -> None:
        await self.check_owner(poll_id)
        poll = await self.existing_poll(poll_id)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="poll-{poll.id}.csv"')
        self.write(results_csv(poll))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs as a formula


def results_csv(poll: Poll) -> str:
    """A poll's counts as CSV: a header, one row per option in order, then the total.

    A label that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``, tab
    or carriage return first) is prefixed with ``'``, so opening the file runs nothing.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["option", "label", "votes", "percent"])
    for option in poll.options:
        label = "'" + option.label if option.label[:1] in FORMULA_STARTS else option.label
        percent = round(100 * option.votes / poll.total, 1) if poll.total else 0
        writer.writerow([option.id, label, option.votes, percent])
    writer.writerow(["", "total", poll.total, 100 if poll.total else 0])
    return out.getvalue()


class PollStateApiHandler(ManageApiHandler):
    """``POST /api/polls/<id>/close``, ``.../reopen`` and ``.../reveal`` (creator only):
    answer the poll and publish ``closed``, ``reopened`` or ``revealed`` (with the counts)
    to its pages."""

    async def post(self, poll_id: str, action: str) -> None:
        await self.check_owner(poll_id)
        if action == "reveal":
            poll = await self.store.reveal(poll_id)
        else:
            poll = await self.store.set_closed(poll_id, action == "close")
        if poll is None:  # deleted in between
            raise ApiError(404, "no_such_poll", "There is no poll with this id.")
        if action == "reveal":
            frame = poll.revealed_frame()
        else:
            frame = {"type": "closed" if poll.closed else "reopened", "poll": poll_id}
        self.hub.publish(poll_topic(poll_id), frame)
        self.write(poll.to_json())


class VotePageHandler(BaseHandler):
    """``/vote``: create a poll, join one by its code, and the list of polls.

    ``/vote?code=<join code>`` redirects to the poll with that code; an unknown code shows
    this page with a 404 and a sentence beside the code box.
    """

    def initialize(self, store: Polls) -> None:
        self.store = store

    async def get(self) -> None:
        typed = self.get_query_argument("code", None)
        if typed is not None:
            await self.join(typed)
            return
        await self.show()

    head = get

    async def join(self, typed: str) -> None:
        """Redirect to the poll whose join code ``typed`` is, or show why not."""
        code = normalize_code(typed)
        poll_id = await self.store.find_code(code) if code is not None else None
        if poll_id is not None:
            self.redirect(self.reverse_url("vote_poll", poll_id))
            return
        self.set_status(404)
        await self.show(code_error=f"No poll has the code “{typed.strip()[:20]}”. Check it "
                        "on the screen and try again.", typed=typed.strip()[:20])

    async def show(self, code_error: Optional[str] = None, typed: str = "") -> None:
        """The page itself."""
        issue_voter_cookie(self)
        self.render("polls.html", polls=await self.store.recent(), code_error=code_error,
                    typed=typed)


class JoinPageHandler(VotePageHandler):
    """``/j/<code>``: the short join address shown on the present view; redirects to the
    poll, or shows ``/vote`` with a 404 and the reason."""

    async def get(self, typed: str) -> None:  # type: ignore[override]
        await self.join(typed)

    head = get


class PollPageHandler(BaseHandler):
    """``/vote/<id>``: one poll's live chart; a 404 page for an unknown id.

    The page carries the ``poll`` frame (the poll, its counts and this voter's choice) as
    JSON, so it shows the options and bars at once, before and without any socket.
    """

    def initialize(self, store: Polls) -> None:
        self.store = store

    template = "vote.html"

    async def get(self, poll_id: str) -> None:
        snapshot = None
        if len(poll_id) <= POLL_ID_MAX:
            snapshot = await self.store.snapshot(poll_id, voter_id(self))
        if snapshot is None:
            raise tornado.web.HTTPError(404)
        poll, ballot = snapshot
        issue_voter_cookie(self)
        share_url = self.absolute_url(self.reverse_url("vote_poll", poll.id))
        self.render(self.template, poll=poll, share_url=share_url, frame=poll_frame(poll, ballot))

    head = get


class PresentPageHandler(PollPageHandler):
    """``/vote/<id>/present``: the poll full screen for a room, big bars, total and QR."""

    template = "present.html"


def qr_svg(text: str) -> bytes:
    """An SVG QR code of ``text``, sized by its viewBox (CSS sets the size), dark on white
    with the quiet zone, so it scans on a dark page too."""
    buffer = io.BytesIO()
    segno.make(text, error="m", micro=False).save(
        buffer, kind="svg", border=4, dark="#000", light="#fff", omitsize=True,
        xmldecl=False, title="QR code of this poll's address",
    )
    return buffer.getvalue()


class QrCode(NamedTuple):
    """One drawn QR code and its ETag."""

    svg: bytes
    etag: str


class QrCodes:
    """QR codes by the URL they encode, each drawn once: the ``max_entries`` most recently
    used are kept (the least recent goes first), so memory is bounded whatever Hosts come."""

    def __init__(self, max_entries: int = QR_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._codes: OrderedDict[str, QrCode] = OrderedDict()  # least recently used first

    def get(self, url: str) -> QrCode:
        """The QR code of ``url``, drawn now if it is not kept."""
        code = self._codes.get(url)
        if code is None:
            svg = qr_svg(url)
            code = self._codes[url] = QrCode(svg, f'"{hashlib.sha1(svg).hexdigest()}"')
            while len(self._codes) > self.max_entries:
                self._codes.popitem(last=False)
        self._codes.move_to_end(url)
        return code

    def __len__(self) -> int:
        return len(self._codes)


class QrCodeHandler(BaseHandler):
    """``/vote/<id>/qr.svg``: an SVG QR code of the poll page's absolute URL (``--public-url``,
    or the scheme and a valid Host), from the cache; cacheable, with an ETag (304 to
    ``If-None-Match``)."""

    def initialize(self, store: Polls, codes: QrCodes) -> None:
        self.store = store
        self.codes = codes

    async def get(self, poll_id: str) -> None:
        url = self.absolute_url(self.reverse_url("vote_poll", poll_id))  # a bad Host: 400
        poll = await find_poll(self.store, poll_id)
        if poll is None:
            raise tornado.web.HTTPError(404)
        code = self.codes.get(url)
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", f"public, max-age={QR_MAX_AGE}")
        self.set_header("Vary", "Host, X-Forwarded-Proto, X-Scheme")
        self.set_header("Etag", code.etag)
        if self.check_etag_header():
            self.set_status(304)
            return
        self.write(code.svg)

    head = get
