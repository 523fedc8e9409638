// Chat over plain HTTP, for where a WebSocket does not get through (fallback.js) and for
// the /models page: Server-Sent Events, and polling, long (the server holds the request
// until there is news) or short (a request every `interval` ms, answered at once).
//
// Each channel has ReconnectingSocket's shape (socket.js): connect(), stop(), `state`, and
// the events "state" (detail: "connecting" | "open" | "closed"), "json" (detail: one chat
// frame, as the WebSocket would carry it) and "close". Besides: "request" (an HTTP request
// went out) and "received" (detail: bytes of payload that came in), which /models counts.
// `url` is a string or a function returning one, called before every request, so the
// caller puts what it has seen into it (?since=).
import { parseObject, retryDelay, STABLE_MS } from "./socket.js";

const encoder = new TextEncoder();

// Bytes of a payload as it travelled: UTF-8 for text.
export function byteLength(data) {
  return typeof data === "string" ? encoder.encode(data).length : data.byteLength;
}

function resolve(url) {
  return typeof url === "function" ? url() : url;
}

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
    const source = new EventSource(resolve(this.url));
    this.source = source;
    let openedAt = null;
    source.onopen = () => {
      openedAt = Date.now();
      this.setState("open");
    };
    source.onmessage = (event) => {
      this.emit("received", byteLength(event.data));
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

// Polling: GET the URL, hand over what came, and ask again: at once for long-polling
// (`interval` 0, the server holds each request until there is news), else `interval` ms
// after the previous request went out. The answer is
// {"messages": [...], "last_id": ..., "recovered": ...}: each message is a "json" event,
// the whole answer a "response" event.
export class PollingChannel extends Channel {
  constructor(url, { interval = 0 } = {}) {
    super(url);
    this.interval = interval;
    this.controller = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    if (this.controller) this.controller.abort();
    if (this.state !== "open") this.setState("connecting");
    this.poll();
    return this;
  }

  async poll() {
    const controller = new AbortController();
    this.controller = controller;
    const started = Date.now();
    this.emit("request");
    let body = null;
    try {
      const response = await fetch(resolve(this.url), {
        signal: controller.signal, cache: "no-store", headers: { Accept: "application/json" },
      });
      const text = await response.text();
      this.emit("received", byteLength(text));
      body = parseObject(text);
      if (!response.ok || !body || !Array.isArray(body.messages)) {
        throw new Error(`poll answered ${response.status}`);
      }
    } catch {
      if (this.controller !== controller) return; // stopped or restarted meanwhile
      this.controller = null;
      this.lost({ status: body && body.error ? body.error.code : null });
      return;
    }
    if (this.controller !== controller) return;
    this.attempts = 0;
    this.setState("open");
    this.emit("response", body);
    for (const frame of body.messages) this.emit("json", frame);
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
