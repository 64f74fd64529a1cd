// bagtrack web app: sign-in, role-aware navigation, the screens (each a module loaded when first shown).
import { api, hasToken, login, problem, refresh, signedIn, signedOut } from "./session.js";
import { el, facts } from "./dom.js";
import { stopQueues, unsent } from "./queue.js";

const $ = (id) => document.getElementById(id);
const SCREENS = {
  scan: { title: "Scan", roles: ["dispatcher", "admin"], module: "./scan.js" },
  bills: { title: "Bills", roles: ["biller", "admin"], module: "./bills.js" },
  lookup: { title: "Lookup", roles: ["dispatcher", "biller", "admin"], module: "./lookup.js" },
  dashboard: { title: "Dashboard", roles: ["dispatcher", "biller", "admin"], module: "./dashboard.js" },
  admin: { title: "Users", roles: ["admin"], module: "./admin.js" },
};
let user = null;
let unmount = null; // what the screen on show returned to stop its timers, streams and listeners

async function onLogin(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  $("login-error").textContent = "";
  let response;
  try { response = await login(form.get("username"), form.get("password")); }
  catch { $("login-error").textContent = "No network: cannot sign in now."; return; }
  if (!response.ok) { $("login-error").textContent = await problem(response); return; }
  signedIn(await response.json());
  event.target.reset();
  await show();
}

async function logout() {
  const n = user ? unsent(user.id) : 0;
  if (n && !confirm(`${n} scan${n === 1 ? " is" : "s are"} not sent yet. They stay on this device for ${user.username} `
    + "and are sent when you sign in again. Log out?")) return;
  leave();
  stopQueues();
  await api("/auth/logout", { method: "POST" }).catch(() => {});
  signedOut();
  user = null;
  location.hash = "";
  await show();
}

async function home(main) {
  const [auth, scans] = await Promise.all([api("/auth/reference"), api("/scans/reference")]);
  const rows = [];
  if (auth.ok) { const ref = await auth.json(); rows.push(["Roles", ref.roles.join(", ")], ["Areas", ref.areas.join(", ")]); }
  if (scans.ok) {
    const ref = await scans.json();
    rows.push(["Parent QR formats", ref.parent_formats.map((f) => `${f.pattern} (${f.capacity} children)`).join("; ")],
      ["Child QR", ref.child_pattern]);
  }
  main.replaceChildren(el("h1", { textContent: `Signed in as ${user.username}` }),
    el("p", { textContent: "Pick a screen above. What this device was told by the server:" }),
    Object.assign(facts(rows), { id: "reference" }));
}

function leave() {
  if (typeof unmount === "function") unmount();
  unmount = null;
}

async function route() {
  leave();
  const main = $("screen");
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  const screen = SCREENS[name];
  if (screen && screen.roles.includes(user.role)) {
    const module = await import(screen.module);
    unmount = await module.mount(main, user, arg);
  } else {
    await home(main);
  }
}

async function show() {
  let me = null;
  try { me = hasToken() || await refresh() ? await api("/auth/me") : null; } catch {
    me = null; // no network: scans waiting on this device stay there until their user signs in again
    $("login-error").textContent = "No network: signing in needs the server. Scans not sent yet stay on this device.";
  }
  user = me && me.ok ? await me.json() : null;
  $("login").hidden = !!user;
  $("screen").hidden = !user;
  $("nav").replaceChildren();
  $("who").replaceChildren();
  if (!user) { $("login-form").elements.username.focus(); return; }
  for (const [name, screen] of Object.entries(SCREENS)) {
    if (!screen.roles.includes(user.role)) continue;
    const link = document.createElement("a");
    link.href = `#/${name}`;
    link.textContent = screen.title;
    $("nav").append(link);
  }
  const out = document.createElement("button");
  out.textContent = "Log out";
  out.id = "logout";
  out.addEventListener("click", logout);
  $("who").append(`${user.username} (${user.role}${user.dispatch_area ? ", " + user.dispatch_area : ""}) `, out);
  await route();
}

$("login-form").addEventListener("submit", onLogin);
window.addEventListener("hashchange", () => user && route());
show();
