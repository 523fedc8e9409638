// The echo page: send text (or the same text as a binary frame) and show what comes back.
import { ReconnectingSocket, socketUrl, showState, el, clock } from "./socket.js";

const form = document.getElementById("echo-form");
const input = document.getElementById("echo-input");
const binary = document.getElementById("echo-binary");
const button = document.getElementById("echo-send");
const log = document.getElementById("echo-log");

const socket = new ReconnectingSocket(socketUrl("/ws/echo"));
showState(socket);

function append(direction, text, kind) {
  const item = el("li", `entry ${direction}`);
  item.append(el("time", "when", clock(Date.now())));
  item.append(el("span", "who", direction === "sent" ? "you →" : "echo ←"));
  if (kind === "binary") item.append(el("span", "tag", "binary"));
  item.append(el("span", "text", text));
  log.prepend(item);
}

socket.addEventListener("state", (event) => {
  button.disabled = event.detail !== "open";
});

socket.addEventListener("message", (event) => {
  const data = event.detail;
  if (typeof data === "string") {
    append("received", data, "text");
  } else {
    append("received", new TextDecoder().decode(data), "binary");
  }
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value;
  if (!text) return;
  const asBinary = binary.checked;
  const sent = socket.send(asBinary ? new TextEncoder().encode(text) : text);
  if (!sent) return; // not connected: keep the text in the box
  append("sent", text, asBinary ? "binary" : "text");
  input.value = "";
  input.focus();
});

socket.connect();
