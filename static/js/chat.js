// The chat page: a room, an optional nickname, public and private messages, who is online.
// Nothing typed is lost: a message stays "pending" until the server sends it back, and a
// reconnect (with ?since=<last id seen>) re-sends whatever the replay shows never arrived.
// A private draft never turns public by itself: when its recipient leaves, the composer
// stays addressed to them (marked "not here") until the user removes the tag, and sending
// gets the server's no_such_user, shown above the log.
// Also: an unread count in the tab title while the tab is hidden, a "New messages ↓"
// button when scrolled up, multi-line messages (Shift+Enter), a character counter near the
// 4,000 limit that refuses (never cuts) a longer message, one notice for a rename, the
// anonymous readers' count, and on a phone a drawer for the online list.
// Where a WebSocket cannot open, the page goes on over Server-Sent Events and POST, or
// long-polling and POST (fallback.js), and says which it uses.
import { showState, el, clock } from "./socket.js";
import { ChatConnection, TRANSPORT_NAMES } from "./fallback.js";

const $ = (id) => document.getElementById(id);
const joinForm = $("chat-join");
const roomInput = $("chat-room");
const nickInput = $("chat-nick");
const notice = $("chat-notice");
const log = $("chat-log");
const form = $("chat-form");
const textInput = $("chat-text");
const sendButton = $("chat-send");
const toChip = $("chat-to");
const toName = $("chat-to-name");
const toAway = $("chat-to-away");
const onlineList = $("chat-online");
const onlineCount = $("chat-count");
const page = document.querySelector(".chat-page");
const where = $("chat-where");
const newButton = $("chat-new");
const counter = $("chat-counter");
const fieldError = $("chat-field-error");
const readersLine = $("chat-readers");
const peopleToggle = $("chat-people-toggle");
const peopleCount = $("chat-people-count");
const peopleClose = $("chat-people-close");
const joinToggle = $("chat-join-toggle");
const transportLabel = $("conn-transport");

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
// Errors that answer one message we sent: that message will not come back.
const MESSAGE_ERRORS = new Set(["bad_message", "too_long", "no_such_user", "nick_required", "rate_limited"]);
// Closes that a retry with the same ?since= would likely earn again (a welcome too big for
// us, a rule broken): the next attempt asks for the newest history instead of a replay.
const DROP_SINCE_CLOSES = new Set([1008, 1009]);
// The server missed messages from the other processes (Redis was interrupted) and cannot
// give them on this connection: reconnecting with ?since= fetches them from history.
const GAP_CLOSE = 1012;
const MAX_TEXT = 4000; // code points, as the server counts them
const COUNTER_FROM = 3500; // the counter shows from here on
const NEAR_END_PX = 80; // closer than this to the bottom counts as "at the end"
const AWAY_GRACE_MS = 10000; // someone gone from a reconnect's welcome may be reconnecting too
const baseTitle = document.title;

let room = null;
let socket = null;
let myNick = null; // the nickname the server gave us
let wantedNick = ""; // the nickname asked for, until the server confirms it
let lastId = null; // highest message id seen in this room
let gapNotice = false; // the notice shows a GAP_CLOSE until the next welcome
let replayDropped = false; // the last reconnect left ?since= out: messages may be missing
let seen = new Set(); // ids already on screen
let online = [];
let privateTo = null;
let pending = []; // {text, to} sent and not yet seen coming back
let joinAsked = null; // nickname asked for with a join message, not answered yet
let nickBeforeJoin; // the nickname held before the last join was answered
let readers = 0; // connections of the room without a nickname, as the server counts them
let unread = 0; // messages that arrived while the tab was hidden
let welcomed = false; // this room's first welcome has come (later ones are reconnects)
let away = new Map(); // nick -> timer: online before a reconnect, not in its welcome
let following = true; // the log is scrolled to its end, and should stay there

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function atEnd() {
  return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_END_PX;
}

function scrollToEnd() {
  log.scrollTop = log.scrollHeight;
  following = true;
  newButton.hidden = true;
}

// Append a line; follow it if the reader was at the end (or it is their own message),
// else offer the "New messages ↓" button for a message.
function addLine(node, { follow = false, message = false } = {}) {
  const nearEnd = atEnd();
  log.append(node);
  if (nearEnd || follow) scrollToEnd();
  else if (message) newButton.hidden = false;
}

function showTitle() {
  document.title = unread ? `(${unread}) ${baseTitle}` : baseTitle;
}

function countUnread() {
  if (document.visibilityState !== "hidden") return;
  unread += 1;
  showTitle();
}

function renderMessage(frame) {
  lastId = lastId === null ? frame.id : Math.max(lastId, frame.id);
  if (seen.has(frame.id)) return;
  seen.add(frame.id);
  const mine = frame.from !== null && frame.from === myNick;
  const item = el("li", `entry msg${mine ? " mine" : ""}${frame.type === "private" ? " private" : ""}`);
  item.dataset.id = frame.id;
  item.append(el("time", "when", clock(frame.ts)));
  item.append(el("span", "who", frame.from ?? "anonymous"));
  if (mine) item.append(el("span", "you-tag", "you"));
  if (frame.type === "private") {
    item.append(el("span", "tag private-tag", mine ? `private → ${frame.to}` : "private to you"));
  }
  item.append(el("span", "text", frame.text)); // a text node; CSS keeps its line breaks
  addLine(item, { follow: mine, message: true });
  if (!mine) countUnread();
}

function renderEvent(text) {
  addLine(el("li", "event", text));
}

function renderPresence(kind, nick) {
  renderEvent(`${nick} ${kind === "joined" ? "joined" : "left"}`);
}

// Someone in the room before a reconnect and not in its welcome: they may be reconnecting
// too, so "left" waits a little for their "joined".
function expectBack(nick) {
  away.set(nick, setTimeout(() => {
    away.delete(nick);
    if (!online.includes(nick)) renderPresence("left", nick);
  }, AWAY_GRACE_MS));
}

function cameBack(nick) {
  if (!away.has(nick)) return false;
  clearTimeout(away.get(nick));
  away.delete(nick);
  return true;
}

function forgetAway() {
  for (const timer of away.values()) clearTimeout(timer);
  away = new Map();
}

function showWhere() {
  where.replaceChildren(el("b", null, room ?? ""), ` · ${myNick ? `as ${myNick}` : "no nickname"}`);
}

function renderReaders() {
  if (socket && socket.transport === "long-polling") {
    // Long-polling carries messages only: nobody's comings and goings.
    readersLine.textContent = "Over long-polling this page cannot see who else is here.";
    readersLine.hidden = false;
    return;
  }
  const you = myNick === null && readers > 0 ? ", you included" : "";
  readersLine.textContent = readers === 1 ? `1 person reading${you}` : `${readers} people reading${you}`;
  readersLine.hidden = readers === 0;
}

function renderOnline() {
  showRecipientHere();
  onlineList.replaceChildren();
  for (const nick of online) {
    const item = el("li");
    const button = el("button", `name${nick === myNick ? " me" : ""}`, nick === myNick ? `${nick} (you)` : nick);
    button.type = "button";
    button.disabled = nick === myNick;
    button.addEventListener("click", () => setPrivate(nick));
    item.append(button);
    onlineList.append(item);
  }
  onlineCount.textContent = `(${online.length})`;
  peopleCount.textContent = `(${online.length}${readers ? ` + ${readers}` : ""})`;
  showWhere();
  renderReaders();
}

function setPrivate(nick) {
  privateTo = nick;
  toChip.hidden = !nick;
  toName.textContent = nick ?? "";
  textInput.placeholder = nick ? `Private message to ${nick}` : "Message";
  showRecipientHere();
  textInput.focus();
}

// Mark the private recipient "not here" while their nickname is not online; the draft
// stays addressed to them either way.
function showRecipientHere() {
  const away = privateTo !== null && !online.includes(privateTo);
  toAway.hidden = !away;
  toChip.classList.toggle("away", away);
}

function sameMessage(frame, entry) {
  const to = frame.type === "private" ? frame.to : null;
  return frame.from === myNick && frame.text === entry.text && (to ?? null) === (entry.to ?? null);
}

// The server echoes our own messages back: the oldest pending one that matches has arrived.
function settlePending(frame) {
  const index = pending.findIndex((entry) => sameMessage(frame, entry));
  if (index >= 0) pending.splice(index, 1);
}

function send(text, to) {
  const message = { type: "message", text };
  if (to) message.to = to;
  return socket.sendJson(message);
}

function onWelcome(frame) {
  if (gapNotice) {
    gapNotice = false;
    showNotice(""); // caught up: the welcome says below what it could give back
  }
  myNick = frame.nick;
  if (myNick) {
    nickInput.value = myNick;
    localStorage.setItem("chat.nick", myNick);
  }
  const before = online;
  online = frame.online;
  readers = typeof frame.readers === "number" ? frame.readers : 0;
  renderOnline();
  const others = online.filter((nick) => nick !== myNick);
  if (!welcomed) {
    // The joiner's own tab says where it stands and who was here before it.
    welcomed = true;
    renderEvent(myNick ? `You joined as ${myNick}.` : "You are reading without a nickname.");
    if (socket.transport !== "long-polling") { // which knows nobody's presence
      renderEvent(others.length ? `Here: ${others.join(", ")}` : "Nobody else here yet.");
    }
  } else {
    // A reconnect: tell what changed while away, not who merely reconnected.
    for (const nick of others) {
      if (!before.includes(nick) && !cameBack(nick)) renderPresence("joined", nick);
    }
    for (const nick of before) {
      if (nick !== myNick && !online.includes(nick) && !away.has(nick)) expectBack(nick);
    }
  }
  if (frame.recovered === false || (replayDropped && frame.recovered === undefined)) {
    addLine(el("li", "event warn", "Reconnected, but some messages may be missing: only the newest are shown."));
    // The replay could not be given: ask from what this welcome holds from now on, never
    // again from the old id.
    lastId = null;
  } else if (frame.recovered === true && frame.history.length) {
    addLine(el("li", "event", `Reconnected: ${frame.history.length} missed message(s) below.`));
  }
  replayDropped = false;
  for (const message of frame.history) {
    renderMessage(message);
    settlePending(message);
  }
  // What was sent before the connection dropped and is not in the replay never arrived
  // (over HTTP every send was answered already: nothing is in doubt).
  if (socket.confirms) return;
  const unsent = pending;
  pending = [];
  for (const entry of unsent) {
    if (send(entry.text, entry.to)) pending.push(entry);
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case "welcome":
      onWelcome(frame);
      break;
    case "message":
    case "private":
      renderMessage(frame);
      settlePending(frame);
      break;
    case "readers":
      readers = frame.count;
      renderOnline();
      break;
    case "online": {
      // After the server lost its link to the others for a moment: who is here now. The
      // changes it missed are told as a reconnect's welcome tells them.
      const before = online;
      online = frame.online;
      for (const nick of online) {
        if (nick !== myNick && !before.includes(nick) && !cameBack(nick)) renderPresence("joined", nick);
      }
      for (const nick of before) {
        if (nick !== myNick && !online.includes(nick)) renderPresence("left", nick);
      }
      renderOnline();
      break;
    }
    case "renamed":
      online = online.map((nick) => (nick === frame.from ? frame.to : nick));
      if (!online.includes(frame.to)) online.push(frame.to);
      if (frame.from === myNick) {
        myNick = frame.to;
        joinAsked = null;
        nickBeforeJoin = undefined;
        nickInput.value = myNick;
        localStorage.setItem("chat.nick", myNick);
        renderEvent(`You are now ${frame.to}.`);
      } else {
        renderEvent(`${frame.from} is now ${frame.to}`);
      }
      renderOnline();
      break;
    case "joined":
      if (joinAsked && frame.nick.toLowerCase() === joinAsked.toLowerCase()) {
        // Most likely the answer to our join; a nick_taken right after undoes it.
        nickBeforeJoin = myNick;
        myNick = frame.nick;
        joinAsked = null;
        localStorage.setItem("chat.nick", myNick);
        if (nickBeforeJoin) online = online.filter((nick) => nick !== nickBeforeJoin);
      }
      if (!online.includes(frame.nick)) {
        online.push(frame.nick);
        if (!cameBack(frame.nick)) {
          renderEvent(frame.nick === myNick ? `You joined as ${frame.nick}.` : `${frame.nick} joined`);
        }
      }
      renderOnline();
      break;
    case "left":
      online = online.filter((nick) => nick !== frame.nick);
      cameBack(frame.nick);
      renderPresence("left", frame.nick);
      renderOnline();
      break;
    case "error":
      showNotice(frame.message);
      if (frame.code === "nick_taken" || frame.code === "bad_nick") {
        if (joinAsked === null && nickBeforeJoin !== undefined) myNick = nickBeforeJoin;
        joinAsked = null;
        nickBeforeJoin = undefined;
        wantedNick = myNick ?? "";
        nickInput.value = myNick ?? nickInput.value;
        nickInput.focus();
        renderOnline();
      }
      if (frame.code === "nick_lost") {
        if (myNick !== null) {
          // The server could not prove the nickname was still ours: anonymous now, and
          // neither a reconnect nor a join asks for it again unless the user does.
          const lost = myNick;
          myNick = null;
          wantedNick = "";
          joinAsked = null;
          nickBeforeJoin = undefined;
          nickInput.value = lost;
          renderEvent(`You lost the nickname ${lost}; you are reading without one. Pick a nickname to speak again.`);
          showWhere();
          renderOnline();
          nickInput.focus();
        } else if (pending.length) {
          // The second one: a message of ours refused as the nickname went.
          const failed = pending.shift();
          if (!textInput.value) textInput.value = failed.text;
        }
      }
      // An answer to a message we sent (over HTTP, `unsent` says so): it will not come back.
      if ((frame.unsent || MESSAGE_ERRORS.has(frame.code)) && pending.length) {
        const failed = pending.shift();
        if (!textInput.value) textInput.value = failed.text;
      }
      break;
  }
}

// What the next connection asks for: the nickname to hold, the newest message seen.
function chatQuery() {
  return { nick: myNick || wantedNick, since: lastId };
}

function showTransport() {
  transportLabel.textContent = `via ${TRANSPORT_NAMES[socket.transport]}`;
  transportLabel.dataset.transport = socket.transport;
}

function enter(newRoom, nick) {
  const transport = socket ? socket.transport : undefined; // a blocked WebSocket stays so
  if (socket) socket.stop();
  room = newRoom;
  myNick = null;
  wantedNick = nick;
  lastId = null;
  replayDropped = false;
  seen = new Set();
  online = [];
  pending = [];
  joinAsked = null;
  readers = 0;
  welcomed = false;
  forgetAway();
  newButton.hidden = true;
  setPrivate(null);
  showNotice("");
  log.replaceChildren();
  renderOnline();
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  history.replaceState(null, "", url);
  socket = new ChatConnection(room, chatQuery, { transport });
  showState(socket);
  showTransport();
  socket.addEventListener("transport", () => {
    showTransport();
    renderOnline();
  });
  socket.addEventListener("state", (event) => {
    sendButton.disabled = event.detail !== "open";
  });
  socket.addEventListener("json", (event) => onFrame(event.detail));
  socket.addEventListener("close", (event) => {
    if (event.detail.code === GAP_CLOSE) {
      showNotice("The server lost its link to the others for a moment; catching up…");
      gapNotice = true;
    }
    if (DROP_SINCE_CLOSES.has(event.detail.code) && lastId !== null) {
      lastId = null;
      replayDropped = true;
    }
  });
  socket.connect();
}

joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const newRoom = roomInput.value.trim();
  if (!ROOM_PATTERN.test(newRoom)) {
    showNotice("A room name is 1 to 64 letters, digits, - or _.");
    return;
  }
  const nick = nickInput.value.trim();
  if (newRoom !== room || !socket || socket.state !== "open") {
    enter(newRoom, nick);
  } else if (nick && nick !== myNick) {
    showNotice("");
    if (socket.canJoin) {
      if (socket.sendJson({ type: "join", nick })) joinAsked = nick;
    } else {
      // Over HTTP a nickname is taken by connecting with it; the log stays.
      wantedNick = nick;
      myNick = null;
      socket.connect();
    }
  }
});

function showFieldError(text) {
  fieldError.textContent = text;
  fieldError.hidden = !text;
  textInput.setAttribute("aria-invalid", text ? "true" : "false");
}

function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1; // eslint-disable-line no-unused-vars
  return count;
}

// The counter from 3,500 characters; past 4,000 it says by how much, and sending is refused
// until the message is shortened (nothing is ever cut).
function updateComposer() {
  const lines = textInput.value.split("\n").length;
  textInput.rows = Math.min(6, Math.max(1, lines));
  const length = codePoints(textInput.value);
  counter.hidden = length < COUNTER_FROM;
  counter.classList.toggle("near", length >= COUNTER_FROM && length <= MAX_TEXT);
  counter.classList.toggle("over", length > MAX_TEXT);
  const n = (value) => value.toLocaleString("en-US");
  counter.textContent = length > MAX_TEXT
    ? `${n(length)} / ${n(MAX_TEXT)}: ${n(length - MAX_TEXT)} too many`
    : `${n(length)} / ${n(MAX_TEXT)}`;
  if (length <= MAX_TEXT && fieldError.dataset.kind === "long") showFieldError("");
  if (textInput.value.trim() && fieldError.dataset.kind === "blank") showFieldError("");
}

function refuse(kind, text) {
  fieldError.dataset.kind = kind;
  showFieldError(text);
  textInput.focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value;
  if (!text.trim()) {
    refuse("blank", "Type a message first: a blank message is not sent.");
    return;
  }
  const length = codePoints(text);
  if (length > MAX_TEXT) {
    refuse("long", `This message is ${length.toLocaleString("en-US")} characters; the limit is `
      + `${MAX_TEXT.toLocaleString("en-US")}. Shorten it by ${(length - MAX_TEXT).toLocaleString("en-US")} to send it.`);
    return;
  }
  if (!send(text, privateTo)) return; // not connected: the text stays in the box
  pending.push({ text, to: privateTo });
  showNotice("");
  showFieldError("");
  textInput.value = "";
  updateComposer();
});

// Enter sends, Shift+Enter is a new line (and Enter while an IME is composing is the IME's).
textInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
textInput.addEventListener("input", updateComposer);

log.addEventListener("scroll", () => {
  following = atEnd();
  if (following) newButton.hidden = true;
});
// The composer growing (lines, the counter) shrinks the log: a reader at the end stays there.
new ResizeObserver(() => {
  if (following) log.scrollTop = log.scrollHeight;
}).observe(log);
newButton.addEventListener("click", scrollToEnd);

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "hidden" && unread) {
    unread = 0;
    showTitle();
  }
});

// Phone: the online list is a drawer and room and nickname fold behind a button.
function setPeopleOpen(open) {
  page.classList.toggle("people-open", open);
  peopleToggle.setAttribute("aria-expanded", String(open));
  if (open) peopleClose.focus();
}
peopleToggle.addEventListener("click", () => setPeopleOpen(!page.classList.contains("people-open")));
peopleClose.addEventListener("click", () => {
  setPeopleOpen(false);
  peopleToggle.focus();
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && page.classList.contains("people-open")) {
    setPeopleOpen(false);
    peopleToggle.focus();
  }
});
onlineList.addEventListener("click", () => setPeopleOpen(false)); // a name chosen: back to writing
joinToggle.addEventListener("click", () => {
  const open = !page.classList.contains("join-open");
  page.classList.toggle("join-open", open);
  joinToggle.setAttribute("aria-expanded", String(open));
  if (open) roomInput.focus();
});

$("chat-to-clear").addEventListener("click", () => setPrivate(null));

const params = new URLSearchParams(location.search);
const startRoom = ROOM_PATTERN.test(params.get("room") || "") ? params.get("room") : "lobby";
roomInput.value = startRoom;
nickInput.value = params.get("nick") ?? localStorage.getItem("chat.nick") ?? "";
enter(startRoom, nickInput.value.trim());
