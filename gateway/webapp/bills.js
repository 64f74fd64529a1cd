// Bills (billers, admins): the day's bills and a new one; a bill: scan parents in, weights, remove, complete,
// reopen, history; the end-of-day summary.
import { api, problem } from "./session.js";
import { el } from "./dom.js";

const button = (text, onClick, id) => {
  const b = el("button", { type: "button", textContent: text, ...(id ? { id } : {}) });
  b.addEventListener("click", onClick);
  return b;
};
const path = (id) => `/bills/${encodeURIComponent(id)}`;

async function call(url, options, status) {
  let response;
  try { response = await api(url, options); } catch { status.textContent = "No network: try again"; status.dataset.kind = "error"; return null; }
  if (!response.ok) { status.textContent = await problem(response); status.dataset.kind = "error"; return null; }
  return response.status === 204 ? {} : response.json();
}

async function list(root) {
  const status = el("p", { id: "bills-status", className: "feedback", role: "status" });
  const form = el("form", { id: "bill-form" },
    el("label", {}, "Capacity (parents) ", el("input", { name: "capacity", type: "number", min: 1, max: 500, required: true, value: 10 })),
    el("label", {}, "Bill code (optional) ", el("input", { name: "bill_id", maxLength: 40 })),
    el("label", {}, "Destination ", el("input", { name: "destination", maxLength: 200 })),
    el("label", {}, "Vehicle number ", el("input", { name: "vehicle_number", maxLength: 40 })),
    el("button", { type: "submit", textContent: "Create bill" }));
  const table = el("ul", { id: "bills-list" });
  const summary = el("section", { id: "bills-summary" });
  root.replaceChildren(el("h1", { textContent: "Bills" }), form, status, el("h2", { textContent: "Latest bills" }), table,
    el("h2", { textContent: "Today" }), summary);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { capacity: Number(data.get("capacity")) };
    for (const key of ["bill_id", "destination", "vehicle_number"]) if (data.get(key)) body[key] = data.get(key);
    const bill = await call("/bills", { method: "POST", body: JSON.stringify(body) }, status);
    if (bill) location.hash = `#/bills/${encodeURIComponent(bill.bill_id)}`;
  });
  const page = await call("/bills?limit=20", {}, status);
  if (page) table.replaceChildren(...page.items.map((b) => el("li", {}, el("a", { href: `#/bills/${encodeURIComponent(b.bill_id)}`,
    textContent: b.bill_id }), ` ${b.status}, ${b.linked_count}/${b.capacity} parents, ${b.actual_weight_kg}/${b.expected_weight_kg} kg`)));
  const day = await call("/bills/summary", {}, status);
  if (day) summary.replaceChildren(el("p", { textContent: `${day.date} (${day.timezone}): ${day.totals.bills} bills, `
    + `${day.totals.bags} parents, ${day.totals.actual_weight_kg}/${day.totals.expected_weight_kg} kg` }),
    el("ul", {}, ...Object.entries(day.by_status).map(([s, t]) => el("li", { textContent: `${s}: ${t.bills} bills, ${t.bags} parents` }))),
    el("ul", {}, ...Object.entries(day.by_creator).map(([who, t]) => el("li", { textContent: `${who}: ${t.bills} bills, ${t.bags} parents` }))));
}

async function detail(root, id) {
  const status = el("p", { id: "bill-status", className: "feedback", role: "status" });
  const head = el("section", { id: "bill-head" });
  const input = el("input", { id: "bill-scan", className: "scan-input", autocomplete: "off",
    placeholder: "Scan a parent bag to load it", ariaLabel: "Scan a parent bag onto this bill" });
  const bags = el("ul", { id: "bill-bags" });
  const actions = el("div", { className: "row" });
  const history = el("ul", { id: "bill-history" });
  root.replaceChildren(el("p", {}, el("a", { href: "#/bills", textContent: "← Bills" })), head, input, status, actions, bags,
    el("h2", { textContent: "History" }), history);
  const say = (text, kind) => { status.textContent = text; status.dataset.kind = kind; };
  const show = async (bill) => {
    if (!bill) return;
    head.replaceChildren(el("h1", { textContent: `Bill ${bill.bill_id}` }),
      el("p", { id: "bill-summary", className: "count", textContent: `${bill.linked_count}/${bill.capacity} parents — ${bill.status}` }),
      el("p", { textContent: `Weight: ${bill.actual_weight_kg} kg loaded of ${bill.expected_weight_kg} kg expected`
        + (bill.destination ? ` · to ${bill.destination}` : "") + (bill.vehicle_number ? ` · ${bill.vehicle_number}` : "") }),
      ...(bill.counts && bill.counts.stale ? [el("p", { className: "stale", textContent: "Children counts are the last known"
        + (bill.counts.age_seconds == null ? "" : ` (${Math.round(bill.counts.age_seconds)} s old)`) + ": scanning could not be asked just now" })] : []));
    bags.replaceChildren(...(bill.bags || []).map((b) => el("li", {}, `${b.parent_qr}: ${b.child_count} children, ${b.weight_kg} kg `,
      button("Remove", async () => { await show(await call(`${path(id)}/bags/${encodeURIComponent(b.parent_qr)}`, { method: "DELETE" }, status)); input.focus(); }))));
    actions.replaceChildren(bill.status === "completed"
      ? button("Reopen", async () => { await show(await call(`${path(id)}/reopen`, { method: "POST" }, status)); }, "bill-reopen")
      : button("Complete", async () => { const done = await call(`${path(id)}/complete`, { method: "POST" }, status);
          if (done) say(`Bill ${done.bill_id} completed`, "ok"); await show(done); }, "bill-complete"));
    const events = await call(`${path(id)}/history?limit=50`, {}, status);
    if (events) history.replaceChildren(...events.items.map((e) => el("li", { textContent:
      `${e.created_at} ${e.kind}${e.parent_qr ? " " + e.parent_qr : ""} by ${e.username}` })));
  };
  input.addEventListener("keydown", async (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const qr = input.value.trim().toUpperCase();
    input.value = "";
    if (!qr) return;
    const bill = await call(`${path(id)}/bags`, { method: "POST", body: JSON.stringify({ parent_qr: qr }) }, status);
    if (bill) { say(`${qr} loaded`, "ok"); await show(bill); }
  });
  input.focus();
  await show(await call(path(id), {}, status));
}

export async function mount(root, user, arg) {
  return arg ? detail(root, decodeURIComponent(arg)) : list(root);
}
