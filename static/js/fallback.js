// Chat that gets through: a WebSocket where it can, else Server-Sent Events to receive and
// POST to send, else long-polling and POST. Which transport, and when to give one up, is
// connection.js's FallbackConnection: a transport is given up only when GIVE_UP_AFTER
// attempts in a row ended without a single frame; once one has carried a frame, its
// failures are outages.
//
// The page sees one ChatConnection with ReconnectingSocket's shape (connect(), stop(),
// sendJson(), `state`, the events "state", "json" and "close") whichever transport carries
// it, plus `transport` and a "transport" event. Over HTTP:
// - a message is a POST; the server's answer comes back as a "json" frame: the message as
//   the room got it, or an error frame marked `unsent: true` (code `not_sent` when the
//   server could not be reached), so every send is settled one way or the other
//   (`confirms`: nothing to send again after a reconnect);
// - a nickname is taken when (re)connecting (?nick=), not by a join message (`canJoin`);
// - long-polling carries messages only: each (re)connect's first answer becomes a welcome
//   (history, the nickname asked for), and nobody's presence is known.
import { ReconnectingSocket, socketUrl } from "./socket.js";
import { FallbackConnection, postForFrame } from "./connection.js";
import { chatPath, EventStreamChannel, PollingChannel } from "./transports.js";

export const TRANSPORTS = ["websocket", "sse", "long-polling"];
export const TRANSPORT_NAMES = {
  websocket: "WebSocket", sse: "Server-Sent Events", "long-polling": "long-polling",
};

export class ChatConnection extends FallbackConnection {
  // `room`: the room. `query()`: {nick, since} for the next attempt (the nickname to hold,
  // the newest message id seen). `transport`: where to start, e.g. the one an earlier
  // connection of the page ended up with, so a blocked WebSocket is not tried again.
  constructor(room, query, { transport = "websocket" } = {}) {
    super(TRANSPORTS, { transport, provenBy: "frame" });
    this.room = room;
    this.query = query;
    this.outbox = Promise.resolve(); // POSTs go one at a time, in the order sent
    this.retiring = new Set(); // channels a reconnect keeps until the new one works
  }

  // Every send is answered (delivered or refused): nothing to send again on a reconnect.
  get confirms() {
    return this.transport !== "websocket";
  }

  // A nickname can be changed on the open connection (else: connect again with ?nick=).
  get canJoin() {
    return this.transport === "websocket";
  }

  // Connect again (over HTTP: how a nickname changes), keeping the previous channel open
  // until the new one carries its first frame or fails: the server sees the browser's new
  // nickname before its old connection ends, and tells the room one "renamed", not a
  // "left" and a "joined".
  reconnect() {
    this.stopped = false;
    const previous = this.channel;
    const channel = this.open(this.transport);
    this.channel = channel;
    if (previous) {
      this.retiring.add(previous);
      const retire = () => {
        this.retiring.delete(previous);
        previous.stop();
      };
      channel.addEventListener("json", retire, { once: true });
      channel.addEventListener("close", retire, { once: true });
    }
    channel.connect();
    return this;
  }

  stop() {
    super.stop();
    for (const channel of this.retiring) channel.stop();
    this.retiring.clear();
  }

  sendJson(message) {
    if (this.transport === "websocket") return this.channel.sendJson(message);
    if (this.state !== "open" || message.type !== "message") return false;
    const body = { text: message.text };
    if (message.to) body.to = message.to;
    const { nick } = this.query();
    if (nick) body.nick = nick;
    this.outbox = this.outbox.then(() => this.post(body));
    return true;
  }

  // The message as the room got it (with its id), or an error frame marked `unsent`.
  async post(body) {
    const { sent, frame } = await postForFrame(
      chatPath("/poll/chat", this.room, {}), body, "The message");
    if (this.stopped) return;
    this.emit("json", sent ? frame : { ...frame, unsent: true });
  }

  makeChannel(transport) {
    return transport === "websocket" ? this.socket()
      : transport === "sse" ? this.eventStream() : this.longPoll();
  }

  socket() {
    return new ReconnectingSocket(() => socketUrl(chatPath("/ws/chat", this.room, this.query())));
  }

  eventStream() {
    return new EventStreamChannel(() => chatPath("/sse/chat", this.room, this.query()));
  }

  // Long-polling: its answers turned into the frames a socket would carry.
  longPoll() {
    let asked = null; // the nickname and since of the request in flight
    let welcomed = false; // this (re)connect's welcome is out
    const channel = new PollingChannel((after, immediate) => {
      const { nick, since } = this.query();
      asked = { nick: nick || null, since: after ?? since ?? null };
      return chatPath("/poll/chat", this.room, {
        nick: asked.nick, since: asked.since, wait: immediate ? 0 : null,
      });
    });
    const emit = (frame) => channel.dispatchEvent(new CustomEvent("json", { detail: frame }));
    channel.addEventListener("state", (event) => {
      if (event.detail !== "open") welcomed = false;
    });
    channel.addEventListener("response", (event) => {
      const answer = event.detail;
      if (welcomed && answer.recovered !== false) {
        for (const message of answer.messages) emit(message);
        return;
      }
      welcomed = true;
      const welcome = {
        type: "welcome", room: this.room, nick: asked.nick,
        online: asked.nick ? [asked.nick] : [], readers: 0, history: answer.messages,
      };
      if (asked.since !== null) welcome.recovered = answer.recovered;
      emit(welcome);
    });
    channel.addEventListener("refused", (event) => emit({ type: "error", ...event.detail }));
    return channel;
  }
}
