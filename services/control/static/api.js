// The control room's HTTP API, same-origin with the session cookie.
//
// State-changing requests carry the session's CSRF token (from GET /api/me); every answer that is
// not 2xx becomes an ApiError with the server's {code, message, field}. A 401 means the session
// is gone (logged out, token rotated or revoked): the page goes back to the login page.

let csrfToken = "";

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || "";
    this.field = body.field || "";
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

export function toLogin(reason) {
  const query = reason ? `?reason=${encodeURIComponent(reason)}` : "";
  window.location.replace(`/login${query}`);
}

export async function api(path, { method = "GET", body, onUnauthenticated = toLogin } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch (_err) {
    data = { message: text.slice(0, 200) };
  }
  if (response.status === 401 && onUnauthenticated) onUnauthenticated("session");
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const SERVICES = {
  mixer: "mixer",
  rundown: "rundown",
  graphics: "graphics",
  outputs: "outputs",
  exchange: "exchange",
};

// One command to a service of the production: the body is the command's canonical JSON.
export function command(production, service, body) {
  const path = `/api/productions/${encodeURIComponent(production)}/${SERVICES[service]}`;
  return api(path, { method: "POST", body });
}

// A fresh media grant: the bearer WHEP and WHIP take in place of the operator's token.
export async function mediaGrant() {
  const { grant } = await api("/api/media-grant", { method: "POST" });
  return grant;
}
