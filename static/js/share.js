// Share a link from any device: a phone's share sheet where there is one, else the
// clipboard, else the link selected with "Copy the link" said beside it. Never "press
// Ctrl+C": a phone has no Ctrl key, and the Clipboard API is missing outside secure contexts.
//
//   import { shareLink } from "./share.js";
//   shareLink({ input: linkInput, button: copyButton, status: statusElement, title: "..." });
//
// `input` holds the URL (a readonly text input); `button` shares it; `status` (optional,
// ideally role="status") tells what happened; without one, a status line is added after
// the button's parent.

const RESET_MS = 4000;

// A touch-first device with a native share sheet: a phone or tablet. Desktop browsers that
// have navigator.share too keep the plain "Copy", which is what a desktop user expects.
function hasShareSheet() {
  return typeof navigator.share === "function" && matchMedia("(pointer: coarse)").matches;
}

function statusAfter(button) {
  const status = document.createElement("p");
  status.className = "share-status small";
  status.setAttribute("role", "status");
  button.parentElement.after(status);
  return status;
}

export function shareLink({ input, button, status = null, title = document.title }) {
  const sheet = hasShareSheet();
  const idleText = sheet ? "Share" : "Copy";
  const out = status ?? statusAfter(button);
  let timer = null;
  button.textContent = idleText;

  function say(text) {
    out.textContent = text;
    clearTimeout(timer);
    timer = setTimeout(() => { out.textContent = ""; }, RESET_MS);
  }

  // The visible fallback: the whole link selected, ready for the device's own copy gesture.
  function selectForCopy() {
    input.focus();
    input.select();
    input.setSelectionRange(0, input.value.length); // iOS Safari ignores select() alone
    say("Copy the link: it is selected.");
  }

  button.addEventListener("click", async () => {
    const url = input.value;
    if (sheet) {
      try {
        await navigator.share({ title, url });
        return;
      } catch (error) {
        if (error?.name === "AbortError") return; // the user closed the sheet
      }
    }
    try {
      await navigator.clipboard.writeText(url);
      say("Link copied.");
    } catch {
      selectForCopy();
    }
  });
}
