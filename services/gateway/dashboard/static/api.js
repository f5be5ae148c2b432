// The only module that talks to the gateway: the token rides in a header, never in a URL.
const TOKEN_KEY = "taskmesh.token";

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  save(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

export class HttpError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field || null;
  }
}

function headers(extra = {}, token = auth.token) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

/** JSON in, JSON out; a 401 also tells the app to show the sign-in form. */
export async function api(path, { method = "GET", body, signal, token } = {}) {
  const init = { method, signal, cache: "no-store", headers: headers({ Accept: "application/json" }, token ?? auth.token) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401 && token === undefined) window.dispatchEvent(new Event("taskmesh:unauthorized"));
    throw new HttpError(response.status, data);
  }
  return data;
}

/** Query string of the non-empty values. */
export function query(values) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** Server-Sent Events over fetch(), because EventSource cannot send the Authorization header. */
export async function* events(path, signal) {
  const response = await fetch(path, { signal, cache: "no-store", headers: headers({ Accept: "text/event-stream" }) });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (response.status === 401) window.dispatchEvent(new Event("taskmesh:unauthorized"));
    throw new HttpError(response.status, body);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

/** Records the app has just received (a submit's reply), so the next page shows them before asking again. */
export const recent = new Map();
