// A poll's owner in this browser: the manage token, kept in local storage so every tab of
// the browser that created the poll (and of any browser that opened its manage link) can
// close, reopen, reveal and delete it; the poll page and the present view share this.
// The manage link is /vote/<id>#manage=<token>: a fragment never reaches the server. A
// token from the address is taken out of the address bar at once (copying the address to
// invite voters must never hand it out), checked with the server, and kept only if it is
// the poll's.

const key = (pollId) => `manage:${pollId}`;

// The token this browser keeps for the poll, or null (tabs from before local storage kept
// it in session storage).
export function storedToken(pollId) {
  try {
    return localStorage.getItem(key(pollId)) ?? sessionStorage.getItem(key(pollId));
  } catch {
    return null; // storage refused (a privacy setting): no owner here
  }
}

function keep(pollId, token) {
  try {
    localStorage.setItem(key(pollId), token);
  } catch {
    // storage refused: this page still manages, a reload will not
  }
}

// The answer of a manage request as a file download (the results CSV): fetched with the
// token, which a plain link could not send, then saved under the server's file name.
export async function download(pollId, token, path) {
  try {
    const response = await fetch(`/api/polls/${encodeURIComponent(pollId)}${path}`, {
      headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
    });
    if (!response.ok) return "The results could not be downloaded. Try again.";
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "");
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name ? name[1] : "results.csv";
    link.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    return "";
  } catch {
    return "Could not reach the server. Try again.";
  }
}

// A manage request with the token; {ok, status, body, message}: `message` says in words
// why it failed.
export async function manageRequest(pollId, token, method, path) {
  try {
    const response = await fetch(`/api/polls/${encodeURIComponent(pollId)}${path}`, {
      method, headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
    });
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    const message = response.ok ? ""
      : response.status === 403 ? "This manage link does not belong to this poll."
        : body?.error?.message ?? `The server answered ${response.status}.`;
    return { ok: response.ok, status: response.status, body, message };
  } catch {
    return { ok: false, status: 0, body: null, message: "Could not reach the server. Try again." };
  }
}

// The poll's manage token in this browser: adopted from the address (the manage link) if
// the server says it is the poll's, else the one kept before. {token, problem}: `problem`
// is a sentence when the address carried a token that is not the poll's.
export async function ownerToken(pollId) {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("manage");
  if (!fromHash) return { token: storedToken(pollId), problem: "" };
  history.replaceState(null, "", location.pathname + location.search);
  const check = await manageRequest(pollId, fromHash, "GET", "/owner");
  if (check.ok) {
    keep(pollId, fromHash);
    return { token: fromHash, problem: "" };
  }
  if (check.status === 0) return { token: fromHash, problem: "" }; // unchecked: this page only
  return { token: storedToken(pollId), problem: check.message };
}

// The manage link of the poll, to open on another device.
export function manageLink(pollId, token) {
  return `${location.origin}/vote/${encodeURIComponent(pollId)}#manage=${encodeURIComponent(token)}`;
}
