// A live connection that gets through: a WebSocket where it can, else the HTTP transports
// after it (Server-Sent Events, long-polling), tried in the page's order. The chat
// (fallback.js) and the poll pages (pollview.js) are each one subclass: which transports they
// have, the channel that carries each (their URLs), and how they send.
//
// A transport is given up only when it never worked on this page: GIVE_UP_AFTER attempts
// in a row ended before it proved itself (or the browser has no such thing at all). Once it
// has worked, its failures are outages, and its channel reconnects by itself (socket.js's
// backoff).
//
// The page sees ReconnectingSocket's shape (connect(), stop(), end(label), `state`, the
// events "state", "json" and "close") whichever transport carries it, plus `transport` and
// a "transport" event when it falls back to the next one.
import { parseObject } from "./socket.js";

export const GIVE_UP_AFTER = 3;

// Whether this browser has `transport` at all (long-polling needs nothing but fetch).
export function available(transport) {
  if (transport === "websocket") return typeof WebSocket === "function";
  if (transport === "sse") return typeof EventSource === "function";
  return true;
}

export class FallbackConnection extends EventTarget {
  // `transports`: the names a subclass's makeChannel() knows, in the order to try them.
  // `transport`: where to start, e.g. the one an earlier connection of the page ended up
  // with, so a blocked WebSocket is not tried again.
  // `provenBy`: what shows that a transport works here. "frame": an attempt carried one (an
  // event stream can open behind a buffering proxy and never deliver). "open": an attempt
  // opened (a socket that opens gets through; the server may still close it, a restart).
  constructor(transports, { transport = transports[0], provenBy = "frame" } = {}) {
    super();
    this.transports = transports;
    this.provenBy = provenBy;
    const start = Math.max(0, transports.indexOf(transport));
    this.transport = transports.slice(start).find(available) ?? transports.at(-1);
    this.state = "closed";
    this.channel = null;
    this.stopped = true;
    this.failures = 0; // attempts in a row that ended before the transport proved itself
    this.proven = false; // the transport proved itself: it works here
  }

  // A new channel of `transport` (ReconnectingSocket's shape, unconnected): the subclass's.
  makeChannel(transport) {
    throw new Error(`${this.constructor.name} has no channel for ${transport}`);
  }

  connect() {
    this.stopped = false;
    const previous = this.channel;
    this.channel = this.open(this.transport);
    if (previous) previous.stop();
    this.channel.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.channel) this.channel.stop();
  }

  // Stop for good (what the connection was for is gone): state "ended", `label` on the
  // badge (showState), no retries.
  end(label) {
    this.stop();
    this.endLabel = label;
    this.setState("ended");
  }

  // A channel of `transport`, its events passed on while it is the current one.
  open(transport) {
    const channel = this.makeChannel(transport);
    const current = () => this.channel === channel && !this.stopped;
    const prove = () => {
      this.proven = true;
      this.failures = 0;
    };
    channel.addEventListener("state", (event) => {
      if (!current()) return;
      if (event.detail === "open" && this.provenBy === "open") prove();
      this.setState(event.detail);
    });
    channel.addEventListener("json", (event) => {
      if (!current()) return;
      if (this.provenBy === "frame") prove();
      this.emit("json", event.detail);
    });
    channel.addEventListener("close", (event) => {
      if (!current()) return;
      this.emit("close", event.detail);
      if (this.proven || navigator.onLine === false) return;
      this.failures += 1;
      if (this.failures >= GIVE_UP_AFTER) this.fallBack();
    });
    return channel;
  }

  // This transport never worked here: on to the next one, if there is one.
  fallBack() {
    const next = this.transports.slice(this.transports.indexOf(this.transport) + 1)
      .find(available);
    if (!next) return;
    this.transport = next;
    this.failures = 0;
    this.emit("transport", next);
    this.connect();
  }

  setState(state) {
    if (this.state === "ended") return; // nothing follows the end
    this.state = state;
    this.emit("state", state);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// POST `body` as JSON to `url`, for a connection that sends over HTTP. The answer as the
// frame a socket would have carried: {sent: true, frame: the server's JSON} when it was
// taken, else {sent: false, frame: an error frame}: the server's error, or `not_sent` saying
// that `what` ("The message", "Your vote") was not sent and why.
export async function postForFrame(url, body, what) {
  let answer = null;
  let status = 0;
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    status = response.status;
    answer = parseObject(await response.text());
  } catch {
    // the server could not be reached
  }
  if (status >= 200 && status < 300 && answer) return { sent: true, frame: answer };
  if (answer?.error) return { sent: false, frame: { type: "error", ...answer.error } };
  return {
    sent: false,
    frame: {
      type: "error", code: "not_sent",
      message: status ? `${what} was not sent: the server answered ${status}.`
        : `${what} was not sent: the server could not be reached.`,
    },
  };
}
