// What the poll page (vote.js) and the present view (present.js) share: the words for
// counts, the bars' accessible names, and the handling of a poll's frames.
import { ReconnectingSocket, socketUrl, showState } from "./socket.js";

// "1 vote", "2 votes", "1,234 votes".
export function votesText(count) {
  return `${count.toLocaleString("en")} ${count === 1 ? "vote" : "votes"}`;
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

// The socket of one poll. `view` gets:
//   poll(message)        the snapshot, first on every (re)connect
//   tally(votes, total)  newer counts (an older tally, overtaken on its way, is dropped)
//   voted(message)       our vote counted (its tally is applied first)
//   state(closed)        the poll was closed (true) or reopened (false)
//   deleted()            the poll is gone; the socket has ended (no more retries)
//   error(message)       an error frame
// A page that was disconnected when the poll was deleted missed the frame, and its
// handshakes are 404s: after each lost connection it asks the API whether the poll still
// exists, and a 404 there ends the socket as the frame would.
// Returns the socket; call connect() on it.
export function pollSocket(pollId, view) {
  const socket = new ReconnectingSocket(socketUrl(`/ws/vote/${encodeURIComponent(pollId)}`));
  showState(socket);
  const gone = () => {
    if (socket.state === "ended") return;
    socket.end("poll deleted");
    view.deleted?.();
  };
  socket.addEventListener("close", async () => {
    if (socket.stopped) return;
    if (await pollIsGone(pollId)) gone();
  });
  let total = -1;
  const tally = (frame) => {
    if (!frame || frame.poll !== pollId || frame.total < total) return;
    total = frame.total;
    view.tally?.(frame.votes, frame.total);
  };
  socket.addEventListener("json", ({ detail: message }) => {
    switch (message.type) {
      case "poll":
        total = message.poll.total;
        view.poll?.(message);
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
      case "deleted":
        if (message.poll === pollId) gone();
        break;
      case "error":
        view.error?.(message);
        break;
    }
  });
  return socket;
}
