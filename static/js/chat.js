// The chat page: a room, an optional nickname, public and private messages, who is online.
// Nothing typed is lost: a message stays "pending" until the server sends it back, and a
// reconnect (with ?since=<last id seen>) re-sends whatever the replay shows never arrived.
// A private draft never turns public by itself: when its recipient leaves, the composer
// stays addressed to them (marked "not here") until the user removes the tag, and sending
// gets the server's no_such_user, shown above the log.
import { ReconnectingSocket, socketUrl, showState, el, clock } from "./socket.js";

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

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
// Errors that answer one message we sent: that message will not come back.
const MESSAGE_ERRORS = new Set(["bad_message", "too_long", "no_such_user", "nick_required", "rate_limited"]);
// Closes that a retry with the same ?since= would likely earn again (a welcome too big for
// us, a rule broken): the next attempt asks for the newest history instead of a replay.
const DROP_SINCE_CLOSES = new Set([1008, 1009]);

let room = null;
let socket = null;
let myNick = null; // the nickname the server gave us
let wantedNick = ""; // the nickname asked for, until the server confirms it
let lastId = null; // highest message id seen in this room
let replayDropped = false; // the last reconnect left ?since= out: messages may be missing
let seen = new Set(); // ids already on screen
let online = [];
let privateTo = null;
let pending = []; // {text, to} sent and not yet seen coming back
let joinAsked = null; // nickname asked for with a join message, not answered yet
let nickBeforeJoin; // the nickname held before the last join was answered

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function scrollToEnd() {
  log.lastElementChild?.scrollIntoView({ block: "end" });
}

function addLine(node) {
  const nearEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  log.append(node);
  if (nearEnd) scrollToEnd();
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
  if (frame.type === "private") {
    item.append(el("span", "tag private-tag", frame.from === myNick ? `private → ${frame.to}` : "private to you"));
  }
  item.append(el("span", "text", frame.text));
  addLine(item);
}

function renderPresence(kind, nick) {
  addLine(el("li", "event", `${nick} ${kind === "joined" ? "joined" : "left"}`));
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
  myNick = frame.nick;
  if (myNick) {
    nickInput.value = myNick;
    localStorage.setItem("chat.nick", myNick);
  }
  online = frame.online;
  renderOnline();
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
  // What was sent before the connection dropped and is not in the replay never arrived.
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
        renderPresence("joined", frame.nick);
      }
      renderOnline();
      break;
    case "left":
      online = online.filter((nick) => nick !== frame.nick);
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
      } else if (MESSAGE_ERRORS.has(frame.code) && pending.length) {
        const failed = pending.shift();
        if (!textInput.value) textInput.value = failed.text;
      }
      break;
  }
}

function socketPath() {
  const query = new URLSearchParams();
  const nick = myNick || wantedNick;
  if (nick) query.set("nick", nick);
  if (lastId !== null) query.set("since", String(lastId));
  const suffix = query.toString();
  return socketUrl(`/ws/chat/${encodeURIComponent(room)}${suffix ? `?${suffix}` : ""}`);
}

function enter(newRoom, nick) {
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
  setPrivate(null);
  showNotice("");
  log.replaceChildren();
  renderOnline();
  const url = new URL(location.href);
  url.searchParams.set("room", room);
  history.replaceState(null, "", url);
  socket = new ReconnectingSocket(socketPath);
  showState(socket);
  socket.addEventListener("state", (event) => {
    sendButton.disabled = event.detail !== "open";
  });
  socket.addEventListener("json", (event) => onFrame(event.detail));
  socket.addEventListener("close", (event) => {
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
    if (socket.sendJson({ type: "join", nick })) joinAsked = nick;
  }
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value;
  if (!text.trim()) return;
  if (!send(text, privateTo)) return; // not connected: the text stays in the box
  pending.push({ text, to: privateTo });
  showNotice("");
  textInput.value = "";
});

$("chat-to-clear").addEventListener("click", () => setPrivate(null));

const params = new URLSearchParams(location.search);
const startRoom = ROOM_PATTERN.test(params.get("room") || "") ? params.get("room") : "lobby";
roomInput.value = startRoom;
nickInput.value = params.get("nick") ?? localStorage.getItem("chat.nick") ?? "";
enter(startRoom, nickInput.value.trim());
