// Admin: users (find, create), their role, area and whether they may sign in, and unlocking a locked account. The
// roles, areas, dispatchers per area and the password rule come from GET /auth/reference; every error shown is
// the API's own.
import { api, problem } from "./session.js";
import { el } from "./dom.js";

const options = (values, selected, blank, label = (v) => v) => [
  ...(blank ? [el("option", { value: "", textContent: blank })] : []),
  ...values.map((v) => el("option", { value: v, textContent: label(v), selected: v === selected, defaultSelected: v === selected }))];

export async function mount(root) {
  const refResponse = await api("/auth/reference");
  if (!refResponse.ok) { root.replaceChildren(el("p", { className: "error", textContent: await problem(refResponse) })); return; }
  let ref = await refResponse.json();
  const message = el("p", { id: "admin-message", className: "feedback", role: "status" });
  const say = (text, kind) => { message.textContent = text; message.dataset.kind = kind; };

  // Creating a user.
  const form = el("form", { id: "user-form", autocomplete: "off" });
  // Each area with its active dispatchers against the most it may have (the server refuses one more).
  const areaLabel = (a) => `${a} · ${(ref.dispatchers_per_area || {})[a] ?? "?"}/${ref.max_dispatchers_per_area}`;
  const areaSelect = (name, selected) => el("select", { name }, ...options(ref.areas, selected, "no area", areaLabel));
  form.append(
    el("label", {}, "Username ", el("input", { name: "username", required: true, minLength: 3, maxLength: 32,
      pattern: ref.username_pattern.replace(/^\^|\$$/g, ""), autocomplete: "off" })),
    el("label", {}, "Email ", el("input", { name: "email", type: "email", required: true, maxLength: 254 })),
    el("label", {}, "Password ", el("input", { name: "password", type: "password", required: true, maxLength: 128,
      autocomplete: "new-password" }), el("small", { textContent: ref.password_rule })),
    el("label", {}, "Role ", el("select", { name: "role" }, ...options(ref.roles, "dispatcher"))),
    el("label", {}, "Area (dispatchers; active/most) ", areaSelect("dispatch_area", "")),
    el("button", { type: "submit", textContent: "Create user" }));

  // Finding users.
  const filters = el("form", { id: "user-filter", className: "row", role: "search" },
    el("input", { name: "q", placeholder: "username", ariaLabel: "username contains", maxLength: 32 }),
    el("select", { name: "role", ariaLabel: "role" }, ...options(ref.roles, "", "any role")),
    el("select", { name: "dispatch_area", ariaLabel: "area" }, ...options(ref.areas, "", "any area")),
    el("button", { type: "submit", textContent: "Find" }));
  const list = el("tbody", { id: "user-list" });
  const more = el("button", { id: "user-more", type: "button", textContent: "More", hidden: true });
  const table = el("table", { className: "users" }, el("thead", {}, el("tr", {}, ...["User", "Role", "Area", "Active",
    "Status", ""].map((t) => el("th", { scope: "col", textContent: t })))), list);
  root.replaceChildren(el("h1", { textContent: "Users" }), message, el("h2", { textContent: "Find" }), filters,
    el("div", { className: "scroll" }, table), more, el("h2", { textContent: "New user" }), form);

  async function refreshReference() {
    const response = await api("/auth/reference").catch(() => null);
    if (response && response.ok) ref = await response.json();
  }

  function row(user) {
    const role = el("select", { ariaLabel: `role of ${user.username}` }, ...options(ref.roles, user.role));
    const area = areaSelect("area", user.dispatch_area || "");
    area.ariaLabel = `area of ${user.username}`;
    const active = el("input", { type: "checkbox", checked: user.is_active, ariaLabel: `${user.username} may sign in` });
    const locked = user.locked_until && new Date(user.locked_until) > new Date();
    const save = el("button", { type: "button", textContent: "Save" });
    const unlock = el("button", { type: "button", textContent: "Unlock", hidden: !locked, className: "unlock" });
    const tr = el("tr", { dataset: { username: user.username } }, el("th", { scope: "row" }, user.username,
      el("br"), el("small", { textContent: user.email })), el("td", {}, role), el("td", {}, area), el("td", {}, active),
    el("td", { className: locked ? "stale" : "", textContent: locked ? `locked until ${new Date(user.locked_until)
      .toLocaleTimeString()}` : user.last_login_at ? `last in ${new Date(user.last_login_at).toLocaleString()}` : "never signed in" }),
    el("td", {}, el("div", { className: "row" }, save, unlock)));
    const patch = async (changes, done) => {
      const response = await api(`/users/${user.id}`, { method: "PATCH", body: JSON.stringify(changes) }).catch(() => null);
      if (!response) { say("No network: the change was not made", "error"); return; }
      if (!response.ok) { say(`${user.username}: ${await problem(response)}`, "error"); return; }
      await refreshReference();
      tr.replaceWith(row(await response.json()));
      say(`${user.username}: ${done}`, "ok");
    };
    save.addEventListener("click", () => {
      const changes = {};
      if (role.value !== user.role) changes.role = role.value;
      if (area.value && area.value !== (user.dispatch_area || "")) changes.dispatch_area = area.value;
      if (active.checked !== user.is_active) changes.is_active = active.checked;
      if (!Object.keys(changes).length) { say(`${user.username}: nothing changed`, "ok"); return; }
      patch(changes, "saved");
    });
    unlock.addEventListener("click", () => patch({ unlock: true }, "unlocked"));
    return tr;
  }

  let cursor = null;
  async function load(append) {
    const query = new URLSearchParams({ limit: "50" });
    for (const [name, value] of new FormData(filters)) if (value) query.set(name, value);
    if (append && cursor) query.set("cursor", cursor);
    const response = await api(`/users?${query}`).catch(() => null);
    if (!response) { say("No network: the list needs the server", "error"); return; }
    if (!response.ok) { say(await problem(response), "error"); return; }
    const page = await response.json();
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const rows = page.items.map(row);
    if (append) list.append(...rows); else list.replaceChildren(...rows);
    if (!append && !rows.length) list.replaceChildren(el("tr", {}, el("td", { colSpan: 6, textContent: "No users match" })));
  }

  filters.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = Object.fromEntries(new FormData(form));
    if (!body.dispatch_area) delete body.dispatch_area;
    const response = await api("/users", { method: "POST", body: JSON.stringify(body) }).catch(() => null);
    if (!response) { say("No network: the user was not created", "error"); return; }
    if (!response.ok) { say(await problem(response), "error"); return; }
    const user = await response.json();
    form.reset();
    await refreshReference();
    say(`Created ${user.username} (${user.role}${user.dispatch_area ? ", " + user.dispatch_area : ""})`, "ok");
    filters.elements.q.value = user.username;
    await load(false);
  });
  await load(false);
}
