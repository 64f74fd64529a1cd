// The session: the access token lives only in this module's memory; the refresh token is auth's httpOnly cookie
// (page scripts cannot read it), so a reload restores the session with one cookie refresh.
const API = "/api/v1";
let access = null; // {token, expires}: never stored, never in a URL
let refreshing = null;

export function signedIn(body) {
  access = { token: body.access_token, expires: Date.now() + (body.expires_in - 30) * 1000 };
}
export function signedOut() { access = null; }
export const hasToken = () => access !== null;

export async function problem(response) {
  try { const body = await response.json(); return body.detail || body.title || `HTTP ${response.status}`; }
  catch { return `HTTP ${response.status}`; }
}

// One refresh at a time, across tabs too: they share the cookie, and two rotations of it in flight look like reuse.
// Resolves true (a new access token), false (signed out), or throws on a network failure.
export function refresh() {
  refreshing ??= (async () => {
    const run = async () => {
      const response = await fetch(`${API}/auth/refresh`, { method: "POST", headers: { "X-Requested-With": "bagtrack" } });
      if (!response.ok) { access = null; return false; }
      signedIn(await response.json());
      return true;
    };
    try { return navigator.locks ? await navigator.locks.request("bagtrack-refresh", run) : await run(); }
    finally { refreshing = null; }
  })();
  return refreshing;
}

// fetch on the public API with the bearer token, refreshing it first when it is due and once on a 401.
export async function api(path, options = {}) {
  if (!access || access.expires <= Date.now()) await refresh();
  const call = () => fetch(API + path, { ...options, headers: { ...(options.headers || {}),
    ...(options.body ? { "Content-Type": "application/json" } : {}),
    ...(access ? { Authorization: `Bearer ${access.token}` } : {}) } });
  let response = await call();
  if (response.status === 401 && await refresh()) response = await call();
  return response;
}

export async function login(username, password) {
  return fetch(`${API}/auth/login`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password, refresh_cookie: true }) });
}
