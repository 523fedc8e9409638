// The poll page (/vote/<id>): a live bar chart of one poll; click an option to vote.
// The server sends a full "poll" snapshot on every (re)connect and the full counts in
// every "tally", so a lost frame or a reconnect never leaves the chart wrong. With
// #manage=<token> in the address (the link its creator got) the page can close, reopen
// and delete the poll; the fragment never reaches the server's logs.
import { el } from "./socket.js";
import { barName, barWidth, percentText, pollSocket, votesText } from "./pollview.js";
import { shareLink as wireShare } from "./share.js";

const section = document.getElementById("poll");
const pollId = section.dataset.pollId;
const list = document.getElementById("poll-options");
const totalText = document.getElementById("poll-total");
const reason = document.getElementById("poll-reason");
const note = document.getElementById("poll-note");
const closedBanner = document.getElementById("poll-closed");
const shareLink = document.getElementById("share-link");
const copyButton = document.getElementById("share-copy");

let rows = new Map(); // option id -> { item, button, bar, count, percent, mine, label }
let votes = {};
let total = 0;
let oneVote = section.dataset.oneVote === "true";
let closed = section.dataset.closed === "true";
let deleted = false;
let voted = null; // the option this browser voted for, in a one-vote poll
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
    button.addEventListener("click", () => vote(option.id));
    item.append(button);
    list.append(item);
    rows.set(option.id, { item, button, bar, count, percent, mine, label: option.label });
  }
  update(Object.fromEntries(poll.options.map((option) => [option.id, option.votes])), poll.total);
}

function update(newVotes, newTotal) {
  votes = newVotes;
  total = newTotal;
  totalText.textContent = votesText(total);
  const most = Math.max(0, ...Object.values(votes));
  for (const [id, row] of rows) {
    const count = votes[id] ?? 0;
    row.count.textContent = votesText(count);
    row.percent.textContent = percentText(count, total);
    row.bar.style.width = barWidth(count, total);
    row.item.dataset.votes = String(count);
    row.item.classList.toggle("leading", count > 0 && count === most);
  }
  syncButtons();
}

// Why the buttons cannot be pressed now, in words; "" when they can.
function disabledReason() {
  if (deleted) return "This poll was deleted.";
  if (closed) return "Poll closed: voting has ended.";
  if (socket.state !== "open") return "Not connected yet: you can vote once the connection is back.";
  if (waiting) return "Sending your vote…";
  if (oneVote && voted !== null) return "You already voted: one vote per voter.";
  return "";
}

function syncButtons() {
  const why = disabledReason();
  reason.textContent = why;
  reason.hidden = !why;
  closedBanner.hidden = !closed || deleted;
  for (const [id, row] of rows) {
    const chosen = id === voted;
    // aria-disabled, not disabled: a disabled button drops keyboard focus to the page, so
    // the voter's focus would be lost the moment the vote goes out.
    row.button.setAttribute("aria-disabled", String(why !== ""));
    row.item.classList.toggle("chosen", chosen);
    row.mine.hidden = !chosen;
    const name = barName(row.label, votes[id] ?? 0, total);
    row.button.setAttribute("aria-label", chosen ? `${name}, your vote` : name);
  }
  manage.sync();
}

function vote(optionId) {
  if (disabledReason()) return; // the button says why (aria-disabled, focus kept)
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

function setClosed(isClosed) {
  closed = isClosed;
  say(closed ? "The poll was closed." : "The poll was reopened: you can vote again.");
  syncButtons();
}

const socket = pollSocket(pollId, {
  poll(message) {
    voted = message.voted ?? null;
    waiting = false;
    closed = message.poll.closed;
    render(message.poll);
    if (voted !== null) say(`You voted for ${labelOf(voted)}.`);
  },
  tally: update,
  voted(message) {
    waiting = false;
    if (oneVote) voted = message.option;
    say(`Your vote for ${labelOf(message.option)} counted.`);
    syncButtons();
  },
  state: setClosed,
  deleted() {
    deleted = true;
    say("This poll was deleted by its creator.");
    syncButtons();
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

// The manage token: from the address the creator was sent to (then taken out of the
// address bar, so copying the address to invite voters never hands it out), or from this
// tab's session storage after a reload.
function manageToken() {
  const key = `manage:${pollId}`;
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("manage");
  if (fromHash) {
    try {
      sessionStorage.setItem(key, fromHash);
      history.replaceState(null, "", location.pathname + location.search);
    } catch {
      // No storage: the token stays in the address, or a reload would lose it.
    }
    return fromHash;
  }
  try { return sessionStorage.getItem(key); } catch { return null; }
}

// The creator's controls, shown when the page has the manage token.
const manage = (() => {
  const token = manageToken();
  const panel = document.getElementById("manage");
  const closeButton = document.getElementById("manage-close");
  const reopenButton = document.getElementById("manage-reopen");
  const deleteButton = document.getElementById("manage-delete");
  const manageNote = document.getElementById("manage-note");
  if (!token) return { sync() {} };
  panel.hidden = false;
  const link = document.getElementById("manage-link");
  link.value = `${location.origin}/vote/${encodeURIComponent(pollId)}#manage=${encodeURIComponent(token)}`;
  copyOnClick(document.getElementById("manage-copy"), link);

  async function send(method, path, done) {
    manageNote.textContent = "";
    manageNote.classList.remove("error");
    try {
      const response = await fetch(`/api/polls/${encodeURIComponent(pollId)}${path}`, {
        method, headers: { Authorization: `Bearer ${token}` },
      });
      if (response.ok) {
        await done(response);
        return;
      }
      const body = await response.json().catch(() => null);
      manageNote.textContent = response.status === 403
        ? "This manage link does not belong to this poll."
        : body?.error?.message ?? `The server answered ${response.status}.`;
    } catch {
      manageNote.textContent = "Could not reach the server. Try again.";
    }
    manageNote.classList.add("error");
  }

  // The live frame updates every page; the answer updates this one even before it comes.
  closeButton.addEventListener("click", () => send("POST", "/close", async (r) => {
    closed = (await r.json()).closed;
    syncButtons();
  }));
  reopenButton.addEventListener("click", () => send("POST", "/reopen", async (r) => {
    closed = (await r.json()).closed;
    syncButtons();
  }));
  deleteButton.addEventListener("click", () => {
    if (!confirm("Delete this poll and all its votes? This cannot be undone.")) return;
    send("DELETE", "", async () => {
      deleted = true;
      socket.stop();
      say("You deleted this poll.");
      syncButtons();
    });
  });
  return {
    sync() {
      panel.hidden = deleted;
      closeButton.hidden = closed;
      reopenButton.hidden = !closed;
    },
  };
})();

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

syncButtons();
socket.connect();
