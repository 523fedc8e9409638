// The present view (/vote/<id>/present): one poll full screen for a room, big bars, the
// total, the question and the QR code, live over the same socket as the poll page.
import { el } from "./socket.js";
import { barName, barWidth, percentText, pollSocket, votesText } from "./pollview.js";

const section = document.getElementById("present");
const pollId = section.dataset.pollId;
const bars = document.getElementById("present-bars");
const totalText = document.getElementById("present-total");
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
  update(Object.fromEntries(poll.options.map((option) => [option.id, option.votes])), poll.total);
  setClosed(poll.closed);
}

function update(votes, total) {
  totalText.textContent = votesText(total);
  const most = Math.max(0, ...Object.values(votes));
  for (const [id, row] of rows) {
    const count = votes[id] ?? 0;
    row.numbers.textContent = `${votesText(count)} · ${percentText(count, total)}`;
    row.bar.style.width = barWidth(count, total);
    row.track.setAttribute("aria-label", barName(row.label, count, total));
    row.item.dataset.votes = String(count);
    row.item.classList.toggle("leading", count > 0 && count === most);
  }
}

function setClosed(closed) {
  closedBanner.hidden = !closed;
}

const socket = pollSocket(pollId, {
  poll: (message) => render(message.poll),
  tally: update,
  state: setClosed,
  deleted() {
    closedBanner.textContent = "This poll was deleted.";
    closedBanner.hidden = false;
    document.getElementById("present-join").hidden = true; // no QR code to a poll that is gone
  },
});

document.getElementById("present-url").textContent =
  `${location.host}/vote/${encodeURIComponent(pollId)}`;

fullscreen.hidden = !document.fullscreenEnabled;
fullscreen.addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
  fullscreen.textContent = document.fullscreenElement ? "Leave full screen" : "Full screen";
});

socket.connect();
