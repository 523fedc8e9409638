// What the poll page (vote.js) and the present view (present.js) share: the words for
// counts, the bars' accessible names, and the handling of a poll's frames.
import { parseObject, ReconnectingSocket, socketUrl, showState } from "./socket.js";
import { available, GIVE_UP_AFTER } from "./fallback.js";
import { EventStreamChannel } from "./transports.js";

// "1 vote", "2 votes", "1,234 votes".
export function votesText(count) {
  return `${count.toLocaleString("en")} ${count === 1 ? "vote" : "votes"}`;
}

// Who takes part: "3 voted · 5 watching" ("5 watching" alone where every click counts:
// such a poll knows no voters, and its votes are shown already).
export function participantsText(voters, viewers, oneVote) {
  const watching = `${viewers.toLocaleString("en")} watching`;
  return oneVote ? `${voters.toLocaleString("en")} voted · ${watching}` : watching;
}

// "94%" of the total; "0%" while nobody has voted.
export function percentText(count, total) {
  return `${total ? Math.round((count / total) * 100) : 0}%`;
}

// What a screen reader says for one bar: "贝贝: 60 votes, 94%".
export function barName(label, count, total) {
  return `${label}: ${votesText(count)}, ${percentText(count, total)}`;
}

// The width of a bar, set through the CSSOM (the CSP allows no inline style attributes).
export function barWidth(count, total) {
  return `${total ? ((count / total) * 100).toFixed(2) : 0}%`;
}

// Whether the API says there is no such poll (a 404); false when it cannot tell.
export async function pollIsGone(pollId) {
  try {
    const response = await fetch(`/api/polls/${encodeURIComponent(pollId)}`, { cache: "no-store" });
    return response.status === 404;
  } catch {
    return false;
  }
}

// The poll frame the page came with (the templates' data-frame attribute: the options and
// counts show before, and without, any connection), or null.
export function pageFrame() {
  const holder = document.querySelector("[data-frame]");
  return holder ? parseObject(holder.dataset.frame) : null;
}

// One poll's live connection, whichever way it gets through: a WebSocket where it can,
// else Server-Sent Events (/sse/vote/<id>) to hear and POST /api/polls/<id>/vote to vote.
// The WebSocket is given up only if it never worked on this page: GIVE_UP_AFTER attempts
// in a row that never opened (or no WebSocket at all); once it has opened, its failures
// are outages and it reconnects. It has ReconnectingSocket's shape for showState()
// (`state`, the "state" event, end(label)), plus `transport`.
export class PollConnection extends EventTarget {
  constructor(pollId) {
    super();
    this.pollId = pollId;
    this.transport = ["websocket", "sse"].find(available) ?? "sse";
    this.state = "closed";
    this.channel = null;
    this.stopped = true;
    this.failures = 0; // attempts in a row that never opened
    this.proven = false; // the transport opened once: it works here
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

  // Stop for good (the poll is gone): state "ended", `label` on the badge, no retries.
  end(label) {
    this.stop();
    this.endLabel = label;
    this.setState("ended");
  }

  // Vote for `choice` (an option id, or a list of them for multiple choice): over the
  // socket, or POSTed; the answer comes back as a "json"
  // frame ("voted", or an error frame). False if it could not be sent at all.
  vote(choice) {
    if (this.state !== "open") return false;
    const ballot = Array.isArray(choice) ? { options: choice } : { option: choice };
    if (this.transport === "websocket") return this.channel.sendJson({ type: "vote", ...ballot });
    this.post(ballot);
    return true;
  }

  async post(body) {
    let answer = null;
    let status = 0;
    try {
      const response = await fetch(`/api/polls/${encodeURIComponent(this.pollId)}/vote`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      status = response.status;
      answer = parseObject(await response.text());
    } catch {
      // the server could not be reached
    }
    if (status >= 200 && status < 300 && answer) this.emit("json", answer);
    else if (answer?.error) this.emit("json", { type: "error", ...answer.error });
    else {
      this.emit("json", {
        type: "error", code: "not_sent",
        message: status ? `Your vote was not sent: the server answered ${status}.`
          : "Your vote was not sent: the server could not be reached.",
      });
    }
  }

  open(transport) {
    const path = `/${transport === "websocket" ? "ws" : "sse"}/vote/${encodeURIComponent(this.pollId)}`;
    const channel = transport === "websocket"
      ? new ReconnectingSocket(socketUrl(path)) : new EventStreamChannel(() => path);
    const current = () => this.channel === channel && !this.stopped;
    let opened = false; // this attempt opened
    channel.addEventListener("state", (event) => {
      if (!current()) return;
      if (event.detail === "connecting") opened = false;
      if (event.detail === "open") {
        opened = true;
        this.proven = true;
        this.failures = 0;
      }
      this.setState(event.detail);
    });
    channel.addEventListener("json", (event) => {
      if (current()) this.emit("json", event.detail);
    });
    channel.addEventListener("close", (event) => {
      if (!current()) return;
      this.emit("close", event.detail);
      if (opened || this.proven || navigator.onLine === false) return;
      this.failures += 1;
      if (this.failures >= GIVE_UP_AFTER && transport === "websocket") {
        this.transport = "sse";
        this.failures = 0;
        this.connect();
      }
    });
    return channel;
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

// The counts of poll JSON, option id -> votes; null while the results are hidden.
export function countsOf(poll) {
  if (poll.options.some((option) => option.votes === null)) return null;
  return Object.fromEntries(poll.options.map((option) => [option.id, option.votes]));
}

// The live connection of one poll. `view` gets:
//   poll(message)        the snapshot: the page's own (show() it), then on every (re)connect
//   tally(votes, total)  newer counts (an older tally, overtaken on its way, is dropped);
//                        `votes` is null while the results are hidden, then the "revealed"
//                        frame's counts come the same way
//   voted(message)       our vote counted (its tally is applied first)
//   state(closed)        the poll was closed (true) or reopened (false)
//   participants(text)   who takes part, as participantsText says it (the "participants"
//                        frame: voters who voted, viewers connected, live)
//   deleted()            the poll is gone; the connection has ended (no more retries)
//   error(message)       an error frame
// A page that was disconnected when the poll was deleted missed the frame, and its
// handshakes are 404s: after each lost connection it asks the API whether the poll still
// exists, and a 404 there ends the connection as the frame would.
// Returns the connection; show(pageFrame()) then connect() on it.
export function pollSocket(pollId, view) {
  const connection = new PollConnection(pollId);
  showState(connection);
  const gone = () => {
    if (connection.state === "ended") return;
    connection.end("poll deleted");
    view.deleted?.();
  };
  connection.addEventListener("close", async () => {
    if (connection.stopped) return;
    if (await pollIsGone(pollId)) gone();
  });
  let total = -1;
  let oneVote = false; // the poll counts voters (else every click: no voters to count)
  let revealed = false; // results shown: a counts-less tally overtaken by the reveal is dropped
  const tally = (frame) => {
    if (!frame || frame.poll !== pollId || frame.total < total) return;
    if (frame.votes === null && revealed) return;
    total = frame.total;
    view.tally?.(frame.votes, frame.total);
  };
  const receive = (message) => {
    switch (message.type) {
      case "poll":
        total = message.poll.total;
        oneVote = message.poll.one_vote_per_voter;
        revealed = countsOf(message.poll) !== null;
        view.poll?.(message);
        break;
      case "revealed":
        if (message.poll !== pollId) break;
        revealed = true;
        total = message.total;
        view.tally?.(message.votes, message.total);
        break;
      case "tally":
        tally(message);
        break;
      case "voted":
        tally(message.tally);
        view.voted?.(message);
        break;
      case "closed":
      case "reopened":
        if (message.poll === pollId) view.state?.(message.type === "closed");
        break;
      case "participants":
        if (message.poll === pollId) {
          view.participants?.(participantsText(message.voters, message.viewers, oneVote));
        }
        break;
      case "deleted":
        if (message.poll === pollId) gone();
        break;
      case "error":
        view.error?.(message);
        break;
    }
  };
  connection.addEventListener("json", ({ detail }) => receive(detail));
  connection.show = (frame) => { if (frame) receive(frame); };
  return connection;
}
