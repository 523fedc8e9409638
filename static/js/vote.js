// The poll page (/vote/<id>): a live bar chart of one poll; click an option to vote.
// The page comes with the poll and its counts; the live connection is a WebSocket, or
// Server-Sent Events and POSTed votes where WebSockets do not get through (pollview.js).
// The server sends a full "poll" snapshot on every (re)connect and the full counts in
// every "tally", so a lost frame or a reconnect never leaves the chart wrong. In a browser
// that owns the poll (owner.js) the page can close, reopen and delete it.
import { el } from "./socket.js";
import {
  barName, barWidth, countsOf, pageFrame, percentText, pollSocket, votesText,
} from "./pollview.js";
import { download, manageLink, manageRequest, ownerToken } from "./owner.js";
import { shareLink as wireShare } from "./share.js";

const section = document.getElementById("poll");
const pollId = section.dataset.pollId;
const list = document.getElementById("poll-options");
const totalText = document.getElementById("poll-total");
const participantsLine = document.getElementById("poll-participants");
const reason = document.getElementById("poll-reason");
const note = document.getElementById("poll-note");
const closedBanner = document.getElementById("poll-closed");
const shareLink = document.getElementById("share-link");
const copyButton = document.getElementById("share-copy");

let rows = new Map(); // option id -> { item, button, bar, count, percent, mine, label }
let votes = {};
let total = 0;
let hidden = false; // the results are hidden until the speaker reveals them
let oneVote = section.dataset.oneVote === "true";
let closed = section.dataset.closed === "true";
let deleted = false;
let voted = null; // the option this browser voted for (its first choice), in a one-vote poll
let choices = new Set(); // every option of this browser's ballot
let allowChange = false; // the poll lets a voter change its vote while open
let maxChoices = 1; // options one ballot may name: multiple choice above 1
let picked = new Set(); // multiple choice: the options ticked, not yet sent
let waiting = false; // a one-vote poll's vote is on its way: no second click meanwhile

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
    const head = el("span", "option-head");
    head.append(el("span", "label", option.label));
    const mine = el("span", "mine", "✓ Your vote");
    mine.hidden = true;
    head.append(mine);
    const count = el("span", "count");
    const percent = el("span", "percent");
    const numbers = el("span", "numbers");
    numbers.append(count, percent);
    const bar = el("span", "bar");
    const track = el("span", "bar-track");
    track.append(bar);
    button.append(head, numbers);
    const described = ["poll-reason"];
    if (option.gloss) {
      const gloss = el("span", "gloss", option.gloss);
      gloss.id = `gloss-${option.id}`;
      described.unshift(gloss.id);
      button.append(gloss);
    }
    button.append(track);
    button.setAttribute("aria-describedby", described.join(" "));
    button.addEventListener("click", () => pick(option.id));
    item.append(button);
    list.append(item);
    rows.set(option.id, { item, button, bar, count, percent, mine, label: option.label });
  }
  update(countsOf(poll), poll.total);
}

// New counts; `newVotes` null: the results are hidden until the speaker reveals them (the
// total still shows).
function update(newVotes, newTotal) {
  hidden = newVotes === null;
  votes = newVotes ?? {};
  total = newTotal;
  totalText.textContent = hidden
    ? `${votesText(total)} · results hidden until the speaker reveals them` : votesText(total);
  section.dataset.results = hidden ? "hidden" : "shown";
  const most = Math.max(0, ...Object.values(votes));
  for (const [id, row] of rows) {
    const count = votes[id] ?? 0;
    row.count.textContent = hidden ? "" : votesText(count);
    row.percent.textContent = hidden ? "" : percentText(count, total);
    row.bar.style.width = hidden ? "0%" : barWidth(count, total);
    row.item.dataset.votes = hidden ? "" : String(count);
    row.item.classList.toggle("leading", !hidden && count > 0 && count === most);
  }
  syncButtons();
}

// Why the buttons cannot be pressed now, in words; "" when they can.
function disabledReason() {
  if (deleted) return "This poll was deleted.";
  if (closed) return "Poll closed: voting has ended.";
  if (socket.state !== "open") return "Not connected yet: you can vote once the connection is back.";
  if (waiting) return "Sending your vote…";
  if (oneVote && voted !== null && !allowChange) return "You already voted: one vote per voter.";
  return "";
}

// Multiple choice: the send button, and what it says about the ticked options.
const sendButton = document.getElementById("poll-send");
sendButton.addEventListener("click", () => {
  if (picked.size) vote([...picked]);
});

function syncButtons() {
  const why = disabledReason();
  reason.textContent = why;
  reason.hidden = !why;
  closedBanner.hidden = !closed || deleted;
  for (const [id, row] of rows) {
    const chosen = choices.has(id);
    // aria-disabled, not disabled: a disabled button drops keyboard focus to the page, so
    // the voter's focus would be lost the moment the vote goes out.
    row.button.setAttribute("aria-disabled", String(why !== ""));
    row.item.classList.toggle("chosen", chosen);
    row.mine.hidden = !chosen;
    const name = hidden ? row.label : barName(row.label, votes[id] ?? 0, total);
    row.button.setAttribute("aria-label", chosen ? `${name}, your vote` : name);
    if (maxChoices > 1) row.button.setAttribute("aria-pressed", String(picked.has(id)));
    else row.button.removeAttribute("aria-pressed");
  }
  sendButton.hidden = maxChoices <= 1;
  sendButton.disabled = why !== "" || picked.size === 0;
  sendButton.textContent = `Send my ${picked.size === 1 ? "choice" : "choices"} (${picked.size} of at most ${maxChoices})`;
  manage.sync();
}

// A click on an option: a vote, or in multiple choice a tick (sent with the send button).
function pick(optionId) {
  if (disabledReason()) return; // the button says why (aria-disabled, focus kept)
  if (maxChoices <= 1) {
    if (!(allowChange && choices.has(optionId))) vote(optionId);
    return;
  }
  if (picked.has(optionId)) picked.delete(optionId);
  else if (picked.size < maxChoices) picked.add(optionId);
  else say(`Choose at most ${maxChoices} options: untick one first.`, true);
  syncButtons();
}

// Send a ballot: one option id, or a list of them (multiple choice).
function vote(optionId) {
  if (disabledReason()) return; // the button says why (aria-disabled, focus kept)
  if (!socket.vote(optionId)) {
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

// The poll is gone: say so where the poll was, and take down what invites people to it.
function showDeleted() {
  deleted = true;
  say("This poll was deleted.");
  document.getElementById("share").hidden = true;
  syncButtons();
}

function setClosed(isClosed) {
  closed = isClosed;
  say(closed ? "The poll was closed." : "The poll was reopened: you can vote again.");
  syncButtons();
}

const socket = pollSocket(pollId, {
  poll(message) {
    voted = message.voted ?? null;
    choices = new Set(message.choices ?? (voted === null ? [] : [voted]));
    picked = new Set(choices);
    allowChange = message.poll.allow_change ?? false;
    maxChoices = message.poll.max_choices ?? 1;
    waiting = false;
    closed = message.poll.closed;
    render(message.poll);
    if (voted !== null) say(`You voted for ${[...choices].map(labelOf).join(", ")}.`);
  },
  tally: update,
  participants: (text) => { participantsLine.textContent = text; },
  voted(message) {
    waiting = false;
    const ballot = message.options ?? [message.option];
    if (oneVote) {
      voted = message.option;
      choices = new Set(ballot);
      picked = new Set(ballot);
    }
    say(`Your vote for ${ballot.map(labelOf).join(", ")} counted.`);
    syncButtons();
  },
  state: setClosed,
  deleted() {
    showDeleted();
  },
  error(message) {
    waiting = false;
    if (message.code === "poll_closed") closed = true;
    say(message.message, true);
    syncButtons();
  },
});

socket.addEventListener("state", (event) => {
  if (event.detail !== "open") waiting = false;
  syncButtons();
});

// The creator's controls, shown when this browser owns the poll (owner.js): its own tab,
// any other tab of the browser that created it, or a browser that opened the manage link.
const manage = { sync() {} };
ownerToken(pollId).then(({ token, problem }) => {
  const panel = document.getElementById("manage");
  const closeButton = document.getElementById("manage-close");
  const reopenButton = document.getElementById("manage-reopen");
  const deleteButton = document.getElementById("manage-delete");
  const manageNote = document.getElementById("manage-note");
  if (problem) say(problem, true);
  if (!token) return;
  panel.hidden = false;
  // The link stays hidden until asked for: this page may be on a projector.
  const link = document.getElementById("manage-link");
  const show = document.getElementById("manage-show");
  link.value = manageLink(pollId, token);
  show.addEventListener("click", () => {
    link.hidden = !link.hidden;
    show.setAttribute("aria-expanded", String(!link.hidden));
    show.textContent = link.hidden ? "Show" : "Hide";
  });
  copyOnClick(document.getElementById("manage-copy"), link);

  async function send(method, path, done) {
    manageNote.textContent = "";
    manageNote.classList.remove("error");
    const answer = await manageRequest(pollId, token, method, path);
    if (answer.ok) {
      await done(answer.body);
      return;
    }
    manageNote.textContent = answer.message;
    manageNote.classList.add("error");
  }

  // The live frame updates every page; the answer updates this one even before it comes.
  closeButton.addEventListener("click", () => send("POST", "/close", (poll) => {
    closed = poll.closed;
    syncButtons();
  }));
  reopenButton.addEventListener("click", () => send("POST", "/reopen", (poll) => {
    closed = poll.closed;
    syncButtons();
  }));
  // A copy with no votes, for asking again: opened as its owner (its own manage link).
  document.getElementById("manage-duplicate").addEventListener("click", () => send(
    "POST", "/duplicate", (copy) => {
      location.assign(`/vote/${encodeURIComponent(copy.id)}#manage=${encodeURIComponent(copy.manage_token)}`);
    }));
  document.getElementById("manage-csv").addEventListener("click", async () => {
    const problem = await download(pollId, token, "/results.csv");
    manageNote.textContent = problem;
    manageNote.classList.toggle("error", Boolean(problem));
  });
  deleteButton.addEventListener("click", () => {
    if (!confirm("Delete this poll and all its votes? This cannot be undone.")) return;
    send("DELETE", "", () => {
      socket.end("poll deleted");
      showDeleted();
    });
  });
  manage.sync = () => {
    panel.hidden = deleted;
    closeButton.hidden = closed;
    reopenButton.hidden = !closed;
  };
  syncButtons();
});

function copyOnClick(button, input) {
  const label = button.textContent;
  button.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Selected: copy it"; // no clipboard API outside secure contexts
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
}

shareLink.value = `${location.origin}/vote/${encodeURIComponent(pollId)}`;
// The public link: a share sheet on phones that have one, else the clipboard, else the
// link selected with a word on how to copy it (share.js). The manage link is only copied.
wireShare({ input: shareLink, button: copyButton, title: document.title });

socket.show(pageFrame()); // the options and counts the page came with, before any socket
syncButtons();
socket.connect();
