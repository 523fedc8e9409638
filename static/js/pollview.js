// What the poll page (vote.js) and the present view (present.js) share: the words for
// counts, the bars' accessible names, and the handling of a poll's frames.
import { parseObject, ReconnectingSocket, socketUrl, showState } from "./socket.js";
import { FallbackConnection, postForFrame } from "./connection.js";
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

// One poll's live connection, whichever way it gets through (connection.js): a WebSocket
// where it can, else Server-Sent Events (/sse/vote/<id>) to hear and POST
// /api/polls/<id>/vote to vote. The WebSocket is given up only if it never opened on this
// page: GIVE_UP_AFTER attempts in a row (or no WebSocket at all); once it has opened, its
// failures are outages and it reconnects.
export class PollConnection extends FallbackConnection {
  constructor(pollId) {
    super(["websocket", "sse"], { provenBy: "open" });
    this.pollId = pollId;
  }

  makeChannel(transport) {
    const path = `/${transport === "websocket" ? "ws" : "sse"}/vote/${encodeURIComponent(this.pollId)}`;
    return transport === "websocket"
      ? new ReconnectingSocket(socketUrl(path)) : new EventStreamChannel(() => path);
  }

  // Vote for `choice` (an option id, or a list of them for multiple choice): over the
  // socket, or POSTed; the answer comes back as a "json" frame ("voted", or an error
  // frame). False if it could not be sent at all.
  vote(choice) {
    if (this.state !== "open") return false;
    const ballot = Array.isArray(choice) ? { options: choice } : { option: choice };
    if (this.transport === "websocket") return this.channel.sendJson({ type: "vote", ...ballot });
    this.post(ballot);
    return true;
  }

  async post(body) {
    const url = `/api/polls/${encodeURIComponent(this.pollId)}/vote`;
    const { frame } = await postForFrame(url, body, "Your vote");
    this.emit("json", frame);
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
