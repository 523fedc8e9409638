// Chat over plain HTTP, for where a WebSocket does not get through (fallback.js) and for
// the /models page: Server-Sent Events, and polling, long (the server holds the request
// until there is news) or short (a request every `interval` ms, answered at once).
//
// Each channel has ReconnectingSocket's shape (socket.js): connect(), stop(), `state`, and
// the events "state" (detail: "connecting" | "open" | "closed") and "close"; the event
// stream also "json" (detail: one chat frame, as the WebSocket would carry it). Besides:
// "request" (an HTTP request went out) and "received" (detail: the bytes that came in on the
// wire, as far as a page can tell: headers and framing included, see wireBytes below), which
// /models counts. `url` is a function called before every request, so the
// caller puts what it has seen into it (?since=).
import { parseObject, retryDelay, STABLE_MS } from "./socket.js";

const encoder = new TextEncoder();

// "/sse/chat/lobby?nick=alice&since=17": a chat endpoint with the arguments that are set.
export function chatPath(prefix, room, args) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(args)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
  }
  const suffix = query.toString();
  return `${prefix}/${encodeURIComponent(room)}${suffix ? `?${suffix}` : ""}`;
}

// Bytes of a payload as it travelled: UTF-8 for text.
export function byteLength(data) {
  return typeof data === "string" ? encoder.encode(data).length : data.byteLength;
}

// What a page can tell of the bytes on the wire, which the browser hides (estimates, the
// same rules for every page; docs/protocol.md, "The /models page"):
// - a fetch() answer: its status line, its header lines as the browser shows them
//   ("name: value\r\n"; Set-Cookie is hidden from pages, so not counted), the blank line,
//   the body;
// - a Server-Sent Event: its "id:" line when it carried one, its "data:" lines, the blank
//   line, and the chunk framing of the chunked response around it;
// - a WebSocket frame from the server: its 2 to 10 bytes of header, then the payload.
export const wireBytes = {
  response(response, body) {
    let bytes = byteLength(`HTTP/1.1 ${response.status} ${response.statusText}\r\n`) + 2;
    for (const [name, value] of response.headers) bytes += byteLength(`${name}: ${value}\r\n`);
    return bytes + byteLength(body);
  },
  event(data, withId, id) {
    const lines = data.split("\n").map((line) => `data: ${line}\n`).join("");
    const event = byteLength(`${withId ? `id: ${id}\n` : ""}${lines}\n`);
    return event + event.toString(16).length + 4; // "<size hex>\r\n" ... "\r\n"
  },
  frame(data) {
    const payload = byteLength(data);
    return payload + (payload < 126 ? 2 : payload < 65536 ? 4 : 10);
  },
};

// What channels share: the state, the events, the backoff between failed attempts.
class Channel extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.state = "closed";
    this.stopped = true;
    this.attempts = 0; // attempts in a row that failed (the backoff grows with them)
    this.timer = null;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // The connection failed or ended: say so, and try again after the backoff.
  lost(detail = {}) {
    this.setState("closed");
    this.emit("close", detail);
    if (this.stopped) return;
    const delay = retryDelay(this.attempts);
    this.attempts += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

// Server-Sent Events: one GET whose response stays open, each event's data a JSON frame.
// Reconnects are ours, not EventSource's own, so each new request carries the caller's
// current URL (its ?since=) and follows the same backoff as the WebSocket.
export class EventStreamChannel extends Channel {
  constructor(url) {
    super(url);
    this.source = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    this.close();
    this.setState("connecting");
    this.emit("request");
    const source = new EventSource(this.url());
    this.source = source;
    let openedAt = null;
    let lastId = "";
    source.onopen = () => {
      openedAt = Date.now();
      this.setState("open");
    };
    source.onmessage = (event) => {
      // EventSource keeps the last id: a new one means this event had an "id:" line.
      const withId = event.lastEventId !== lastId;
      lastId = event.lastEventId;
      this.emit("received", wireBytes.event(event.data, withId, event.lastEventId));
      const frame = parseObject(event.data);
      if (frame) this.emit("json", frame);
    };
    source.onerror = () => {
      if (this.source !== source) return;
      this.close();
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) this.attempts = 0;
      this.lost({ opened: openedAt !== null });
    };
    return this;
  }

  close() {
    if (!this.source) return;
    this.source.close();
    this.source = null;
  }

  stop() {
    super.stop();
    this.close();
    this.setState("closed");
  }
}

// Polling: GET the URL, hand over the answer, and ask again: at once for long-polling
// (`interval` 0: the server holds each request until there is news), else `interval` ms
// after the previous request went out. `url(since, immediate)` gives each request's URL:
// `since` is where the last answer ended (null before the first), `immediate` asks for an
// answer without waiting (every short poll, and the first request after a (re)connect, so
// the page knows at once that it is back). Events: "response" (detail: the answer,
// {"messages": [...], "last_id": ..., "recovered": ...}) and "refused" (detail: the
// server's {"code", "message"} when it answered with an error), no "json".
export class PollingChannel extends Channel {
  constructor(url, { interval = 0 } = {}) {
    super(url);
    this.interval = interval;
    this.controller = null;
    this.since = null; // the last answer's last_id: where the next request starts
    this.caughtUp = false; // an answer came since the last (re)connect
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    if (this.controller) this.controller.abort();
    this.caughtUp = false;
    if (this.state !== "open") this.setState("connecting");
    this.poll();
    return this;
  }

  async poll() {
    const controller = new AbortController();
    this.controller = controller;
    const started = Date.now();
    const url = this.url(this.since, this.interval > 0 || !this.caughtUp);
    this.emit("request");
    let answer = null;
    let status = 0;
    try {
      const response = await fetch(url, {
        signal: controller.signal, cache: "no-store", headers: { Accept: "application/json" },
      });
      status = response.status;
      const text = await response.text();
      this.emit("received", wireBytes.response(response, text));
      answer = parseObject(text);
    } catch {
      // no answer: the network, or stopped (aborted)
    }
    if (this.controller !== controller) return; // stopped or restarted meanwhile
    const ok = status >= 200 && status < 300 && answer && Array.isArray(answer.messages);
    if (!ok) {
      this.controller = null;
      this.caughtUp = false;
      if (answer && answer.error) this.emit("refused", answer.error);
      this.lost({ status });
      return;
    }
    this.attempts = 0;
    this.caughtUp = true;
    this.since = typeof answer.last_id === "number" ? answer.last_id : this.since ?? 0;
    this.setState("open");
    this.emit("response", answer);
    if (this.stopped || this.controller !== controller) return;
    const wait = Math.max(0, this.interval - (Date.now() - started));
    this.timer = setTimeout(() => this.poll(), wait);
  }

  stop() {
    super.stop();
    const controller = this.controller;
    this.controller = null;
    if (controller) controller.abort();
    this.setState("closed");
  }
}
