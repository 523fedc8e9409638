// The /models page: one chat room followed four ways at once (short polling, long-polling,
// Server-Sent Events, WebSocket), each panel counting its requests, the bytes it received
// (headers and framing included: transports.js, wireBytes) and how long each message took
// from send to display. The room is the page's own ("models-" and a random name) unless
// ?room=<name> shares one ("models-<name>"); the added latency (?latency=, the select) asks
// the server to hold every delivery that long, so localhost shows what a network costs. "Send 10 messages" sends a batch
// with POST; each message's text carries its send time, so every panel can time it.
// Everything stops while the tab is hidden or the page is left, and catches up (?since=)
// when it is back.
import { ReconnectingSocket, socketUrl, el } from "./socket.js";
import { chatPath, EventStreamChannel, PollingChannel, wireBytes } from "./transports.js";

// A shared room's name; the chat room is "models-<name>", within the server's 64 characters.
const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,57}$/;
const LATENCIES = ["0", "100", "300"]; // ms the server may add (realtime/chat/latency.py)
// The minimal answer to a WebSocket handshake, counted once per connection: status line,
// Upgrade, Connection, and a 28-character Sec-WebSocket-Accept.
const HANDSHAKE_BYTES = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".length
  + "Connection: Upgrade\r\nSec-WebSocket-Accept: \r\n\r\n".length + 28;
const BATCH_SIZE = 10;
const SHORT_POLL_MS = 1000;
const KEEP = 50; // entries each panel's log keeps
const DELAYS_KEPT = 200; // delays each panel keeps for its median
// "Test 3 of 10 (batch k3J9x-2, sent 1763700000123)": the batch names the page that sent
// it, so only this page's own messages are timed against its clock.
const STAMP = /^Test (\d+) of (\d+) \(batch ([A-Za-z0-9]+)-(\d+), sent (\d+)\)$/;
const STATE_LABELS = { connecting: "connecting…", closed: "disconnected — retrying", paused: "paused" };

const params = new URLSearchParams(location.search);
const pageId = Math.random().toString(36).slice(2, 8);
const shared = ROOM_PATTERN.test(params.get("room") || "") ? params.get("room") : null;
const roomName = shared ?? `${pageId}${Math.random().toString(36).slice(2, 8)}`;
const room = `models-${roomName}`;
const latencySelect = document.getElementById("models-latency");
latencySelect.value = LATENCIES.includes(params.get("latency")) ? params.get("latency") : "0";
const summary = document.getElementById("models-summary");
const sendButton = document.getElementById("models-send");
const status = document.getElementById("models-status");
// The batch being sent: {number, size, delays: Map(panel -> its delays of this batch),
// requests: Map(panel -> its request count when the batch started)}.
let batch = null;
let batches = 0;

function formatBytes(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${(bytes / 1e6).toFixed(2)} MB`;
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

// One panel: its transport, counters, state badge and log.
class Panel {
  constructor(section, title) {
    this.section = section;
    this.title = title;
    this.badge = section.querySelector(".model-state");
    this.openLabel = section.dataset.openLabel;
    this.log = section.querySelector(".model-log");
    this.stats = Object.fromEntries(
      [...section.querySelectorAll("[data-stat]")].map((node) => [node.dataset.stat, node]));
    this.lastId = null; // newest message id seen: where a stream or socket starts again
    this.seen = new Set();
    this.paused = false;
    this.reset();
  }

  reset() {
    this.requests = 0;
    this.bytes = 0;
    this.messages = 0; // messages shown since the reset: what "per message" divides by
    this.delays = [];
    this.render();
  }

  render() {
    this.stats.requests.textContent = this.requests.toLocaleString("en-US");
    this.stats.bytes.textContent = formatBytes(this.bytes);
    this.stats.bytes.dataset.bytes = String(this.bytes); // exact, for whoever reads it
    this.stats["per-message"].textContent = this.perMessage();
    const last = this.delays[this.delays.length - 1];
    this.stats.delay.textContent = last === undefined ? "–" : formatMs(last);
    this.stats.median.textContent = this.delays.length ? formatMs(median(this.delays)) : "–";
  }

  perMessage() {
    return this.messages ? formatBytes(Math.round(this.bytes / this.messages)) : "–";
  }

  // Count what a transport does: its requests, what it received, its state.
  watch(transport) {
    this.transport = transport;
    transport.addEventListener("request", () => this.request());
    transport.addEventListener("received", (event) => this.received(event.detail));
    transport.addEventListener("state", (event) => this.showState(event.detail));
    transport.addEventListener("json", (event) => this.frame(event.detail));
    return this;
  }

  request() {
    this.requests += 1;
    this.render();
  }

  received(bytes) {
    this.bytes += bytes;
    this.render();
  }

  showState(state) {
    if (this.paused && state !== "paused") return; // a close arriving after the pause
    this.badge.dataset.state = state;
    this.badge.textContent = state === "open" ? this.openLabel : STATE_LABELS[state] ?? state;
  }

  frame(frame) {
    if (frame.type === "welcome") {
      for (const message of frame.history) this.message(message);
    } else if (frame.type === "message") {
      this.message(frame);
    }
  }

  message(frame) {
    if (typeof frame.id !== "number" || this.seen.has(frame.id)) return;
    this.seen.add(frame.id);
    this.messages += 1;
    this.lastId = this.lastId === null ? frame.id : Math.max(this.lastId, frame.id);
    const item = el("li", "entry");
    const stamp = STAMP.exec(frame.text);
    if (stamp && stamp[3] === pageId) {
      const delay = Date.now() - Number(stamp[5]);
      item.append(el("span", "text", `${stamp[1]} of ${stamp[2]}`));
      item.append(el("span", "delay", formatMs(delay)));
      this.delays.push(delay);
      if (this.delays.length > DELAYS_KEPT) this.delays.shift();
      this.render();
      arrived(this, Number(stamp[4]), delay);
    } else {
      item.append(el("span", "who", frame.from ?? "anonymous"));
      item.append(el("span", "text", frame.text));
      this.render();
    }
    const follow = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    this.log.append(item);
    while (this.log.children.length > KEEP) this.log.firstElementChild.remove();
    if (follow) this.log.scrollTop = this.log.scrollHeight;
  }

  pause() {
    this.transport.stop();
    this.showState("paused");
    this.paused = true;
  }

  resume() {
    this.paused = false;
    this.transport.connect();
  }

  // Start again on new URLs (another latency): stop, and connect unless paused.
  restart() {
    if (this.paused) return; // resume() connects with the new URLs
    this.transport.stop();
    this.transport.connect();
  }
}

// A message of the batch reached a panel: once every panel has the whole batch, the
// summary table says what each took: its median delay, the requests it made and the bytes
// it received meanwhile, and its bytes per message so far.
function arrived(panel, number, delay) {
  if (!batch || batch.number !== number) return;
  const delays = batch.delays.get(panel);
  delays.push(delay);
  if (panels.some((each) => batch.delays.get(each).length < batch.size)) return;
  const rows = panels.map((each) => {
    const row = el("tr");
    row.append(el("th", null, each.title));
    row.lastChild.scope = "row";
    for (const cell of [
      formatMs(median(batch.delays.get(each))),
      (each.requests - batch.requests.get(each)).toLocaleString("en-US"),
      formatBytes(each.bytes - batch.bytes.get(each)),
      each.perMessage(),
    ]) row.append(el("td", null, cell));
    return row;
  });
  summary.tBodies[0].replaceChildren(...rows);
  summary.caption.textContent = `The last batch of ${batch.size}, with ${latencySelect.value} ms `
    + "added latency";
  summary.hidden = false;
  status.textContent = `All ${batch.size} messages shown everywhere: see the table.`;
  batch = null;
}

function panel(key) {
  const section = document.getElementById(`model-${key}`);
  return new Panel(section, section.querySelector("h2").textContent);
}

// The latency asked of the server, in every panel's URLs (null: none, no argument).
function latency() {
  return latencySelect.value === "0" ? null : latencySelect.value;
}

const short = panel("short");
const long = panel("long");
const sse = panel("sse");
const ws = panel("ws");
const panels = [short, long, sse, ws];
short.watch(new PollingChannel(
  (since) => chatPath("/poll/chat", room, { since, wait: 0, latency: latency() }),
  { interval: SHORT_POLL_MS }));
long.watch(new PollingChannel(
  (since, immediate) => chatPath(
    "/poll/chat", room, { since, wait: immediate ? 0 : null, latency: latency() })));
for (const poller of [short, long]) {
  poller.transport.addEventListener("response", (event) => {
    for (const message of event.detail.messages) poller.message(message);
  });
}
sse.watch(new EventStreamChannel(
  () => chatPath("/sse/chat", room, { since: sse.lastId, latency: latency() })));

// The WebSocket: a handshake is its one request (its answer counted once it is open); then
// each frame, header and data.
const socket = new ReconnectingSocket(
  () => socketUrl(chatPath("/ws/chat", room, { since: ws.lastId, latency: latency() })));
ws.watch(socket);
socket.addEventListener("state", (event) => {
  if (event.detail === "connecting") ws.request();
  if (event.detail === "open") ws.received(HANDSHAKE_BYTES);
});
socket.addEventListener("message", (event) => ws.received(wireBytes.frame(event.detail)));

async function post(text) {
  const response = await fetch(chatPath("/poll/chat", room, {}), {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ text }),
  });
  if (response.ok) return;
  let message = `the server answered ${response.status}`;
  try {
    message = (await response.json()).error.message;
  } catch {
    // not the JSON error we expect: keep the status
  }
  throw new Error(message);
}

sendButton.addEventListener("click", async () => {
  batches += 1;
  const number = batches;
  batch = {
    number, size: BATCH_SIZE,
    delays: new Map(panels.map((each) => [each, []])),
    requests: new Map(panels.map((each) => [each, each.requests])),
    bytes: new Map(panels.map((each) => [each, each.bytes])),
  };
  sendButton.disabled = true;
  status.textContent = `Sending ${BATCH_SIZE} messages…`;
  try {
    for (let n = 1; n <= BATCH_SIZE; n += 1) {
      await post(`Test ${n} of ${BATCH_SIZE} (batch ${pageId}-${number}, sent ${Date.now()})`);
    }
    if (batch && batch.number === number) status.textContent = `Sent ${BATCH_SIZE} messages.`;
  } catch (error) {
    status.textContent = `Sending failed: ${error.message}`;
    batch = null;
  } finally {
    sendButton.disabled = false;
  }
});

document.getElementById("models-reset").addEventListener("click", () => {
  for (const each of panels) each.reset();
  if (batch) {
    for (const each of panels) {
      batch.requests.set(each, 0);
      batch.bytes.set(each, 0);
    }
  }
  status.textContent = "Counters reset.";
});

// Nothing runs for a tab nobody looks at, or a page being left (kept in the back-forward
// cache, it picks up from where it was when shown again).
function pauseAll() {
  for (const each of panels) if (!each.paused) each.pause();
}

function resumeAll() {
  for (const each of panels) if (each.paused) each.resume();
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") pauseAll();
  else resumeAll();
});
window.addEventListener("pagehide", pauseAll);
window.addEventListener("pageshow", (event) => {
  if (event.persisted && document.visibilityState !== "hidden") resumeAll();
});

// Another latency: every panel reconnects asking for it; the address keeps it for a reload.
latencySelect.addEventListener("change", () => {
  const address = new URL(location.href);
  if (latency()) address.searchParams.set("latency", latencySelect.value);
  else address.searchParams.delete("latency");
  history.replaceState(null, "", address);
  for (const each of panels) each.restart();
  status.textContent = `Added latency: ${latencySelect.value} ms.`;
});

const roomLink = document.getElementById("models-room");
roomLink.textContent = room;
roomLink.href = `/chat?room=${encodeURIComponent(room)}`;
const shareLink = document.getElementById("models-share");
shareLink.href = `/models?room=${encodeURIComponent(roomName)}`;
shareLink.textContent = `/models?room=${roomName}`;
for (const each of panels) each.transport.connect();
