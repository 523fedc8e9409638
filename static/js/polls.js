// The /vote page: create a poll through the JSON API, then open it with its manage link.
// The server's refusal lists every problem of the form, each naming its field ("title",
// "options", "options.2"), and the page shows each sentence next to its field, all at once.
// Enter in an option box goes to the next option (adding one at the end) instead of
// submitting the form half-filled.
import { el } from "./socket.js";

const MIN_OPTIONS = 2;
const MAX_OPTIONS = 20;
const START_OPTIONS = 3;

const form = document.getElementById("new-poll");
const title = document.getElementById("new-title");
const optionList = document.getElementById("new-option-list");
const addButton = document.getElementById("new-add-option");
const oneVote = document.getElementById("new-one-vote");
const listed = document.getElementById("new-listed");
const hideResults = document.getElementById("new-hidden");
const allowChange = document.getElementById("new-allow-change");
const maxChoices = document.getElementById("new-max-choices");
const button = document.getElementById("new-create");
const formError = document.getElementById("new-error");

// The option inputs, rebuilt from their values whenever one is added or removed, so the
// labels, ids and error slots always read "Option 1", "Option 2", ... in order.
function renderOptions(values) {
  optionList.replaceChildren();
  values.forEach((value, index) => {
    const item = el("li", "option-field");
    const id = `new-option-${index}`;
    const label = el("label", null, `Option ${index + 1}`);
    label.htmlFor = id;
    const input = el("input");
    input.type = "text";
    input.id = id;
    input.maxLength = 100;
    input.value = value;
    input.placeholder = `Type option ${index + 1}`;
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.isComposing) return;
      event.preventDefault();
      nextOption(index);
    });
    item.append(label, input);
    if (values.length > MIN_OPTIONS) {
      const remove = el("button", "secondary remove-option", "Remove");
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove option ${index + 1}`);
      remove.addEventListener("click", () => {
        const rest = optionValues();
        rest.splice(index, 1);
        renderOptions(rest);
        document.getElementById(`new-option-${Math.min(index, rest.length - 1)}`).focus();
      });
      item.append(remove);
    }
    const error = el("p", "field-error");
    error.id = `${id}-error`;
    error.hidden = true;
    item.append(error);
    optionList.append(item);
  });
  addButton.hidden = values.length >= MAX_OPTIONS;
}

function optionValues() {
  return [...optionList.querySelectorAll("input")].map((input) => input.value);
}

function addOption() {
  const values = optionValues();
  values.push("");
  renderOptions(values);
  document.getElementById(`new-option-${values.length - 1}`).focus();
}

// Enter in option `index`: the next box, or a new one after the last (up to the maximum).
function nextOption(index) {
  const next = document.getElementById(`new-option-${index + 1}`);
  if (next) next.focus();
  else if (optionValues().length < MAX_OPTIONS) addOption();
}

addButton.addEventListener("click", addOption);

function clearErrors() {
  formError.hidden = true;
  for (const error of form.querySelectorAll(".field-error")) {
    error.hidden = true;
    error.textContent = "";
  }
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    if (field.tagName === "INPUT") field.removeAttribute("aria-describedby");
  }
}

// Show `text` next to the field the server named; anything else goes under the form.
// `focus`: move the focus to that field (the first error's).
function showError(text, field, focus = true) {
  const target = {
    title: [title, "new-title-error"],
    max_choices: [maxChoices, "new-max-choices-error"],
    allow_change: [maxChoices, "new-max-choices-error"],
    options: [document.getElementById("new-options"), "new-options-error"],
  }[field] ?? (/^options\.\d+$/.test(field ?? "")
    ? [document.getElementById(`new-option-${field.split(".")[1]}`), `new-option-${field.split(".")[1]}-error`]
    : null);
  const [control, errorId] = target ?? [];
  const slot = errorId && document.getElementById(errorId);
  if (!control || !slot) {
    formError.textContent = text;
    formError.hidden = false;
    return;
  }
  slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
  slot.hidden = false;
  control.setAttribute("aria-invalid", "true");
  control.setAttribute("aria-describedby", errorId);
  if (focus) (control.tagName === "INPUT" ? control : control.querySelector("input"))?.focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  // Blank options at the end are dropped; one in the middle is sent and the server says
  // which it is, so "Option 2" in its answer is the second box on the page.
  const labels = optionValues().map((value) => value.trim());
  while (labels.length && !labels[labels.length - 1]) labels.pop();
  button.disabled = true;
  try {
    const response = await fetch("/api/polls", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        title: title.value, options: labels,
        one_vote_per_voter: oneVote.checked, listed: listed.checked,
        results: hideResults.checked ? "hidden" : "live",
        allow_change: allowChange.checked,
        max_choices: Number(maxChoices.value) || 1,
      }),
    });
    const body = await response.json().catch(() => null);
    if (response.status === 201 && body) {
      const token = encodeURIComponent(body.manage_token);
      location.assign(`/vote/${encodeURIComponent(body.id)}#manage=${token}`);
      return;
    }
    const problems = body?.error?.errors ?? [body?.error ?? {}];
    problems.forEach((problem, index) => showError(
      problem.message ?? `The server answered ${response.status}.`, problem.field, index === 0));
  } catch {
    showError("Could not reach the server. Try again.");
  } finally {
    button.disabled = false;
  }
});

renderOptions(Array(START_OPTIONS).fill(""));
