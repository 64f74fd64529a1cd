// bagtrack web app: the session. The access token lives only in this module's memory; the refresh token is auth's
// httpOnly cookie (the page cannot read it), so a reload restores the session by one cookie refresh.
const API = "/api/v1";
let access = null; // {token, expires} — never stored, never in a URL
let refreshing = null;

const $ = (id) => document.getElementById(id);

async function problem(response) {
  try { const body = await response.json(); return body.detail || body.title || `HTTP ${response.status}`; }
  catch { return `HTTP ${response.status}`; }
}

// One refresh at a time, across tabs too (they share the cookie; a second rotation in flight would look like reuse).
function refresh() {
  refreshing ??= (async () => {
    const run = async () => {
      const response = await fetch(`${API}/auth/refresh`, { method: "POST", headers: { "X-Requested-With": "bagtrack" } });
      if (!response.ok) { access = null; return false; }
      const body = await response.json();
      access = { token: body.access_token, expires: Date.now() + (body.expires_in - 30) * 1000 };
      return true;
    };
    try { return navigator.locks ? await navigator.locks.request("bagtrack-refresh", run) : await run(); }
    finally { refreshing = null; }
  })();
  return refreshing;
}

export async function api(path, options = {}) {
  if (!access || access.expires <= Date.now()) await refresh();
  const call = () => fetch(API + path, { ...options, headers: { ...(options.headers || {}),
    ...(access ? { Authorization: `Bearer ${access.token}` } : {}) } });
  let response = await call();
  if (response.status === 401 && await refresh()) response = await call();
  return response;
}

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  $("login-error").textContent = "";
  let response;
  try {
    response = await fetch(`${API}/auth/login`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password"), refresh_cookie: true }) });
  } catch { $("login-error").textContent = "No network: cannot sign in now."; return; }
  if (!response.ok) { $("login-error").textContent = await problem(response); return; }
  const body = await response.json();
  access = { token: body.access_token, expires: Date.now() + (body.expires_in - 30) * 1000 };
  event.target.reset();
  await show();
}

async function logout() {
  if (access) await api("/auth/logout", { method: "POST" }).catch(() => {});
  access = null;
  await show();
}

async function show() {
  const me = access || await refresh() ? await api("/auth/me") : null;
  const signedIn = me && me.ok;
  $("login").hidden = signedIn;
  $("home").hidden = !signedIn;
  $("nav").replaceChildren();
  $("who").replaceChildren();
  if (!signedIn) { $("login-form").elements.username.focus(); return; }
  const user = await me.json();
  const out = document.createElement("button");
  out.textContent = "Log out";
  out.addEventListener("click", logout);
  $("who").append(`${user.username} (${user.role}${user.dispatch_area ? ", " + user.dispatch_area : ""}) `, out);
  $("home-title").textContent = `Signed in as ${user.username}`;
  $("home-text").textContent = "The scan station, bills, lookup, dashboard and admin screens are being built; "
    + "the reference data below comes from the server.";
  const [auth, scans] = await Promise.all([api("/auth/reference"), api("/scans/reference")]);
  const list = $("reference");
  list.replaceChildren();
  const row = (term, value) => { const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = term; dd.textContent = value; list.append(dt, dd); };
  if (auth.ok) { const ref = await auth.json(); row("Roles", ref.roles.join(", ")); row("Areas", ref.areas.join(", ")); }
  if (scans.ok) {
    const ref = await scans.json();
    row("Parent QR formats", ref.parent_formats.map((f) => `${f.pattern} (${f.capacity} children)`).join("; "));
    row("Child QR", ref.child_pattern);
  }
}

$("login-form").addEventListener("submit", login);
show();
