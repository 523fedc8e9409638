// The poll page (/vote/<id>): a live bar chart of one poll; click an option to vote.
// The server sends a full "poll" snapshot on every (re)connect and the full counts in
// every "tally", so a lost frame or a reconnect never leaves the chart wrong.
import { ReconnectingSocket, socketUrl, showState, el } from "./socket.js";

const section = document.getElementById("poll");
const pollId = section.dataset.pollId;
const list = document.getElementById("poll-options");
const totalText = document.getElementById("poll-total");
const note = document.getElementById("poll-note");
const shareLink = document.getElementById("share-link");
const copyButton = document.getElementById("share-copy");

let rows = new Map(); // option id -> { item, button, bar, count, percent, label }
let total = 0;
let oneVote = section.dataset.oneVote === "true";
let voted = null; // the option this browser voted for, in a one-vote poll
let waiting = false; // a one-vote poll's vote is on its way: no second click meanwhile

const socket = new ReconnectingSocket(socketUrl(`/ws/vote/${encodeURIComponent(pollId)}`));
showState(socket);

function say(text, isError = false) {
  note.textContent = text;
  note.classList.toggle("error", isError);
}

function render(poll) {
  oneVote = poll.one_vote_per_voter;
  rows = new Map();
  list.replaceChildren();
  for (const option of poll.options) {
    const item = el("li", "poll-option");
    item.dataset.option = option.id;
    const button = el("button", "vote-button");
    button.type = "button";
    const count = el("span", "count");
    const percent = el("span", "percent");
    const numbers = el("span", "numbers");
    numbers.append(count, percent);
    const bar = el("span", "bar");
    const track = el("span", "bar-track");
    track.append(bar);
    button.append(el("span", "label", option.label), numbers, track);
    button.addEventListener("click", () => vote(option.id));
    item.append(button);
    list.append(item);
    rows.set(option.id, { item, button, bar, count, percent, label: option.label });
  }
  const votes = Object.fromEntries(poll.options.map((option) => [option.id, option.votes]));
  update(votes, poll.total);
}

function update(votes, newTotal) {
  total = newTotal;
  totalText.textContent = String(total);
  const most = Math.max(0, ...Object.values(votes));
  for (const [id, row] of rows) {
    const count = votes[id] ?? 0;
    const share = total ? count / total : 0;
    row.count.textContent = String(count);
    row.percent.textContent = `${Math.round(share * 100)}%`;
    row.bar.style.width = `${(share * 100).toFixed(2)}%`; // CSSOM, which the CSP allows
    row.item.dataset.votes = String(count);
    row.item.classList.toggle("leading", count > 0 && count === most);
  }
  syncButtons();
}

// A tally frame, broadcast or inside our own "voted": counts only grow, so an older tally
// than what is shown (one overtaken on its way) is ignored.
function showTally(tally) {
  if (tally && tally.poll === pollId && tally.total >= total) update(tally.votes, tally.total);
}

function syncButtons() {
  const open = socket.state === "open";
  for (const [id, row] of rows) {
    row.button.disabled = !open || waiting || (oneVote && voted !== null);
    row.item.classList.toggle("chosen", id === voted);
  }
}

function vote(optionId) {
  if (!socket.sendJson({ type: "vote", option: optionId })) {
    say("Not connected: your vote was not sent. Try again in a moment.", true);
    return;
  }
  if (oneVote) {
    waiting = true;
    syncButtons();
  }
}

function labelOf(optionId) {
  return rows.get(optionId)?.label ?? optionId;
}

function onMessage(message) {
  switch (message.type) {
    case "poll":
      voted = message.voted ?? null;
      waiting = false;
      render(message.poll);
      if (voted !== null) say(`You voted for ${labelOf(voted)}.`);
      break;
    case "tally":
      showTally(message);
      break;
    case "voted":
      showTally(message.tally);
      waiting = false;
      if (oneVote) voted = message.option;
      say(`Your vote for ${labelOf(message.option)} counted.`);
      syncButtons();
      break;
    case "error":
      waiting = false;
      say(message.message, true);
      syncButtons();
      break;
  }
}

socket.addEventListener("json", (event) => onMessage(event.detail));

socket.addEventListener("state", (event) => {
  if (event.detail !== "open") waiting = false;
  syncButtons();
});

shareLink.value = `${location.origin}/vote/${encodeURIComponent(pollId)}`;
copyButton.addEventListener("click", async () => {
  shareLink.select();
  try {
    await navigator.clipboard.writeText(shareLink.value);
    copyButton.textContent = "Copied";
  } catch {
    copyButton.textContent = "Press Ctrl+C"; // no clipboard API outside secure contexts
  }
  setTimeout(() => { copyButton.textContent = "Copy"; }, 2000);
});

socket.connect();
