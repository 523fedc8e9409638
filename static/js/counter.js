// The shared counter page: shows the counter's value live and adds one per press, over
// /ws/counter/<name>. The value only grows, so a change that arrives after a higher one
// (two server processes publish independently) is ignored; the welcome after each
// (re)connect is taken as it is (a server restarted without Redis may start again at 0).
import { ReconnectingSocket, socketUrl, showState } from "./socket.js";

const NAME = /^[a-z0-9-]{1,40}$/;
const asked = new URLSearchParams(location.search).get("name") || "demo";
const name = NAME.test(asked) ? asked : "demo";

const heading = document.getElementById("counter-name");
const value = document.getElementById("counter-value");
const button = document.getElementById("counter-increment");
const error = document.getElementById("counter-error");

heading.textContent = name;
document.title = `Counter ${name} · Tornado Realtime`;

const socket = new ReconnectingSocket(socketUrl(`/ws/counter/${name}`));
showState(socket);

let shown = null; // the value on screen
let welcomed = false; // the first count frame since the socket opened has come

function show(count) {
  shown = count;
  value.textContent = count.toLocaleString();
}

socket.addEventListener("state", (event) => {
  if (event.detail === "open") welcomed = false;
  button.disabled = event.detail !== "open";
});

socket.addEventListener("json", (event) => {
  const frame = event.detail;
  if (frame.type === "count" && frame.name === name && Number.isInteger(frame.value)) {
    if (!welcomed || shown === null || frame.value > shown) show(frame.value);
    welcomed = true;
    error.hidden = true;
  } else if (frame.type === "error") {
    error.textContent = frame.message;
    error.hidden = false;
  }
});

button.addEventListener("click", () => {
  socket.sendJson({ type: "increment", by: 1 });
});

socket.connect();
