// A message's text with its web addresses as links, built with DOM nodes only (text nodes
// and <a> elements whose href is set as a property), so no text ever becomes HTML.
// Only http:// and https:// addresses become links; punctuation that ends a sentence or
// closes a bracket right after an address is left outside it. Links open in a new tab (the
// chat stays connected) with rel="noopener noreferrer nofollow": the page they open gets no
// handle on this one, no Referer, and no ranking credit from a chat anyone can write in.

const ADDRESS = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?)\]}'"»”’]+$/;

// `https://example.com/a).` -> `https://example.com/a`; an address whose closing bracket
// has its opening one inside it keeps it (Wikipedia's "Foo_(bar)").
function trimAddress(candidate) {
  const tail = candidate.match(TRAILING);
  if (!tail) return candidate;
  const address = candidate.slice(0, -tail[0].length);
  return tail[0].startsWith(")") && address.includes("(") ? `${address})` : address;
}

function safeHref(address) {
  try {
    const url = new URL(address);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

// A fragment of text nodes and links for `text`.
export function linkedText(text) {
  const fragment = document.createDocumentFragment();
  let at = 0;
  for (const match of text.matchAll(ADDRESS)) {
    const address = trimAddress(match[0]);
    const href = safeHref(address);
    if (!href) continue;
    if (match.index > at) fragment.append(text.slice(at, match.index));
    const link = document.createElement("a");
    link.href = href;
    link.textContent = address;
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow";
    fragment.append(link);
    at = match.index + address.length; // the trimmed punctuation stays text
  }
  if (at < text.length) fragment.append(text.slice(at));
  return fragment;
}
