// The /vote page: create a poll through the JSON API, then open it.
const form = document.getElementById("new-poll");
const title = document.getElementById("new-title");
const options = document.getElementById("new-options");
const oneVote = document.getElementById("new-one-vote");
const button = document.getElementById("new-create");
const error = document.getElementById("new-error");

function showError(text) {
  error.textContent = text;
  error.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const labels = options.value.split("\n").map((line) => line.trim()).filter(Boolean);
  button.disabled = true;
  try {
    const response = await fetch("/api/polls", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: title.value, options: labels, one_vote_per_voter: oneVote.checked }),
    });
    const body = await response.json().catch(() => null);
    if (response.status === 201 && body) {
      location.assign(`/vote/${encodeURIComponent(body.id)}`);
      return;
    }
    showError(body?.error?.message ?? `The server answered ${response.status}.`);
  } catch {
    showError("Could not reach the server. Try again.");
  } finally {
    button.disabled = false;
  }
});
