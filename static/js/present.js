// The present view (/vote/<id>/present): one poll full screen for a room, big bars, the
// total, the question and the QR code, live over the same socket as the poll page.
import { el } from "./socket.js";
import { manageRequest, ownerToken } from "./owner.js";
import {
  barName, barWidth, countsOf, pageFrame, percentText, pollSocket, votesText,
} from "./pollview.js";

const section = document.getElementById("present");
const pollId = section.dataset.pollId;
const bars = document.getElementById("present-bars");
const totalText = document.getElementById("present-total");
const participantsLine = document.getElementById("present-participants");
const closedBanner = document.getElementById("present-closed");
const fullscreen = document.getElementById("present-fullscreen");

let rows = new Map(); // option id -> { item, track, bar, numbers, label }

function render(poll) {
  rows = new Map();
  bars.replaceChildren();
  for (const option of poll.options) {
    const item = el("li", "present-option");
    item.dataset.option = option.id;
    const head = el("div", "present-head");
    const name = el("span", "label", option.label);
    const numbers = el("span", "numbers");
    head.append(name, numbers);
    item.append(head);
    if (option.gloss) item.append(el("span", "gloss", option.gloss));
    const track = el("span", "bar-track");
    track.setAttribute("role", "img");
    const bar = el("span", "bar");
    track.append(bar);
    item.append(track);
    bars.append(item);
    rows.set(option.id, { item, track, bar, numbers, label: option.label });
  }
  update(countsOf(poll), poll.total);
  setClosed(poll.closed);
  fit();
}

// New counts; `votes` null: hidden until the speaker reveals them (the total still shows).
function update(votes, total) {
  const hidden = votes === null;
  const counts = votes ?? {};
  totalText.textContent = hidden ? `${votesText(total)} · results hidden` : votesText(total);
  section.dataset.results = hidden ? "hidden" : "shown";
  owner.reveal.hidden = !hidden;
  const most = Math.max(0, ...Object.values(counts));
  for (const [id, row] of rows) {
    const count = counts[id] ?? 0;
    row.numbers.textContent = hidden ? "" : `${votesText(count)} · ${percentText(count, total)}`;
    row.bar.style.width = hidden ? "0%" : barWidth(count, total);
    row.track.setAttribute("aria-label", hidden ? `${row.label}: results hidden`
      : barName(row.label, count, total));
    row.item.dataset.votes = hidden ? "" : String(count);
    row.item.classList.toggle("leading", !hidden && count > 0 && count === most);
  }
  // Longer numbers may wrap a label: fit again only then (a tally can come many times a second).
  if (document.documentElement.scrollHeight > window.innerHeight) fit();
}

// The owner's buttons (owner.js): shown only in a browser that owns the poll, never the
// manage link itself.
const owner = {
  box: document.getElementById("present-owner"),
  close: document.getElementById("present-close"),
  reopen: document.getElementById("present-reopen"),
  reveal: document.getElementById("present-reveal"),
  note: document.getElementById("present-note"),
  token: null,
};

function syncOwner(closed) {
  owner.close.hidden = closed;
  owner.reopen.hidden = !closed;
}

async function manage(path) {
  const answer = await manageRequest(pollId, owner.token, "POST", path);
  owner.note.textContent = answer.message;
  owner.note.hidden = answer.ok;
  if (answer.ok) { // the frame follows, for every other page; this one shows it now
    setClosed(answer.body.closed);
    if (path === "/reveal") update(countsOf(answer.body), answer.body.total);
  }
  fit();
}

ownerToken(pollId).then(({ token }) => {
  if (!token) return;
  owner.token = token;
  owner.box.hidden = false;
  owner.close.addEventListener("click", () => manage("/close"));
  owner.reopen.addEventListener("click", () => manage("/reopen"));
  owner.reveal.addEventListener("click", () => manage("/reveal"));
  fit();
});

function setClosed(closed) {
  syncOwner(closed);
  if (closedBanner.hidden === !closed) return;
  closedBanner.hidden = !closed;
  fit();
}

const socket = pollSocket(pollId, {
  poll: (message) => render(message.poll),
  tally: update,
  participants(text) {
    const first = !participantsLine.textContent;
    participantsLine.textContent = text;
    if (first) fit(); // one more line to fit on the screen; later counts keep its height
  },
  state: setClosed,
  deleted() {
    closedBanner.textContent = "This poll was deleted.";
    closedBanner.hidden = false;
    document.getElementById("present-join").hidden = true; // no QR code to a poll that is gone
    owner.box.hidden = true;
    fit();
  },
});

// The join address: the short /j/<code> when the poll has a code, else its own address. It
// may break between the host and the path, never inside either.
const joinUrl = document.getElementById("present-url");
const joinPath = joinUrl.dataset.code
  ? `/j/${joinUrl.dataset.code}` : `/vote/${encodeURIComponent(pollId)}`;
joinUrl.replaceChildren(el("span", "nobreak", location.host), document.createElement("wbr"),
  el("span", "nobreak", joinPath));

// Everything on one screen: the sizes in vote.css are multiplied by --fit, lowered step by
// step until the page is no taller than the window (or reaches FIT_MIN). Rerun whenever
// what is shown or the window changes.
const FIT_MIN = 0.3;
const FIT_STEP = 0.025;
function fit() {
  const root = document.documentElement;
  let value = 1;
  document.body.style.setProperty("--fit", "1");
  while (root.scrollHeight > window.innerHeight && value > FIT_MIN) {
    value = Math.max(FIT_MIN, value - FIT_STEP);
    document.body.style.setProperty("--fit", value.toFixed(2));
  }
  section.dataset.fit = value.toFixed(2);
}
window.addEventListener("resize", fit);
document.addEventListener("fullscreenchange", fit);
document.getElementById("present-qr").addEventListener("load", fit);
document.fonts?.ready.then(fit);

fullscreen.hidden = !document.fullscreenEnabled;
fullscreen.addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
  fullscreen.textContent = document.fullscreenElement ? "Leave full screen" : "Full screen";
});

socket.show(pageFrame()); // the options and counts the page came with, before any socket
socket.connect();
