// The one WebSocket client every page uses: it reconnects by itself (with backoff and
// jitter, at once when the network or the tab comes back) and reports its state.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
// A connection must stay open this long before the backoff starts again from the shortest
// delay: one the server accepts and closes at once keeps backing off instead of looping.
export const STABLE_MS = 5000;

// The wait before the next attempt, after `attempts` failed ones in a row: a ceiling doubling
// from MIN_DELAY_MS up to MAX_DELAY_MS, and a random point in its upper half, so clients
// dropped together do not all come back at the same instant.
export function retryDelay(attempts) {
  const ceiling = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** attempts);
  return ceiling / 2 + Math.random() * ceiling / 2;
}

// Absolute ws:// or wss:// URL for a path on this server.
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

// A JSON object from a text frame, or null for binary data, bad JSON or a non-object.
export function parseObject(data) {
  if (typeof data !== "string") return null;
  try {
    const value = JSON.parse(data);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

// A WebSocket that comes back after every close until stop() is called.
// Events: "state" (detail: "connecting" | "open" | "closed"), "open", "message"
// (detail: the data), "json" (detail: a text frame parsed as a JSON object; frames that
// are not one are left to "message"), "close" (detail: {code, reason}).
// `url` is a string or a function returning one, called before every attempt, so a page
// can put what it has already seen into the URL (e.g. ?since=).
export class ReconnectingSocket extends EventTarget {
  constructor(url, { binaryType = "arraybuffer" } = {}) {
    super();
    this.url = url;
    this.binaryType = binaryType;
    this.state = "closed";
    this.ws = null;
    this.attempts = 0;
    this.timer = null;
    this.stopped = false;
    this.retryNow = () => { if (this.state === "closed" && !this.stopped) this.connect(); };
    window.addEventListener("online", this.retryNow);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow();
    });
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    const url = typeof this.url === "function" ? this.url() : this.url;
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      // Refused before any network (a URL the browser or its policy forbids): a failed
      // attempt like any other, retried after the backoff.
      this.ws = null;
      this.setState("closed");
      this.dispatchEvent(new CustomEvent("close", { detail: { code: 1006, reason: "" } }));
      if (!this.stopped) this.scheduleRetry();
      return this;
    }
    ws.binaryType = this.binaryType;
    this.ws = ws;
    let openedAt = null;
    ws.onopen = () => {
      openedAt = Date.now();
      this.setState("open");
      this.dispatchEvent(new Event("open"));
    };
    ws.onmessage = (event) => {
      this.dispatchEvent(new CustomEvent("message", { detail: event.data }));
      const message = parseObject(event.data);
      if (message) this.dispatchEvent(new CustomEvent("json", { detail: message }));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) this.attempts = 0;
      this.setState("closed");
      this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason } }));
      if (!this.stopped) this.scheduleRetry();
    };
    return this;
  }

  scheduleRetry() {
    const delay = retryDelay(this.attempts);
    this.attempts += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // Send if open; returns false (and sends nothing) otherwise, so callers never lose
  // a message silently.
  send(data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  }

  sendJson(message) {
    return this.send(JSON.stringify(message));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }

  // Stop for good because what the socket was for is gone (a deleted poll): the state
  // becomes "ended", `label` says why (the badge shows it), and nothing retries.
  end(label) {
    this.stop();
    this.endLabel = label;
    this.setState("ended");
  }

  setState(state) {
    if (this.state === "ended" && this.stopped) return; // nothing follows the end
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}

const STATE_LABELS = {
  connecting: "connecting…", open: "connected", closed: "disconnected — retrying", ended: "ended",
};

// Mirror a socket's state into the header badge (#conn-state).
export function showState(socket, element = document.getElementById("conn-state")) {
  if (!element) return;
  socket.addEventListener("state", (event) => {
    element.dataset.state = event.detail;
    element.textContent = (event.detail === "ended" && socket.endLabel)
      || STATE_LABELS[event.detail] || event.detail;
  });
}

// Build an element with text content only: user text never becomes HTML.
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// "14:03:07" for a millisecond timestamp, in the reader's time zone.
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
