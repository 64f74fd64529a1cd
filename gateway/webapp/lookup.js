// Lookup: any QR or bill code => the composed view (GET /dashboard/lookup/{code}), with stale parts marked by age.
import { api, problem } from "./session.js";
import { el, facts, freshness } from "./dom.js";

function bagView(bag) {
  return facts([["QR", bag.qr_id], ["Type", bag.type], ["Status", bag.status], ["Area", bag.dispatch_area],
    ["Children", bag.type === "parent" ? `${bag.child_count}/${bag.capacity}` : null], ["Weight", `${bag.weight_kg} kg`],
    ["Parent", bag.parent_qr], ["Created by", bag.created_by], ["Created", bag.created_at]]);
}

function billView(bill) {
  return facts([["Bill", bill.bill_id], ["Status", bill.status], ["Parents", `${bill.linked_count}/${bill.capacity}`],
    ["Expected weight", `${bill.expected_weight_kg} kg`], ["Actual weight", `${bill.actual_weight_kg} kg`],
    ["Destination", bill.destination], ["Vehicle", bill.vehicle_number], ["Created by", bill.created_by]]);
}

export async function mount(root) {
  const input = el("input", { id: "lookup-input", className: "scan-input", autocomplete: "off",
    placeholder: "Scan or type a QR or bill code", ariaLabel: "QR or bill code" });
  const out = el("section", { id: "lookup-result", ariaLive: "polite" });
  root.replaceChildren(el("h1", { textContent: "Lookup" }), input, out);
  input.addEventListener("keydown", async (event) => {
    if (event.key !== "Enter") return;
    const code = input.value.trim();
    input.value = "";
    if (!code) return;
    let response;
    try { response = await api(`/dashboard/lookup/${encodeURIComponent(code)}`); }
    catch { out.replaceChildren(el("p", { className: "error", textContent: "No network: lookup needs the server" })); return; }
    if (!response.ok) { out.replaceChildren(el("p", { className: "error", textContent: await problem(response) })); return; }
    const view = await response.json();
    const parts = [el("h2", { textContent: view.code })];
    const stale = freshness(view);
    if (stale) parts.push(stale);
    if (view.kind === "bill") {
      const bill = view.bill && view.bill.bill_id ? view.bill : view.bill && view.bill.data;
      if (bill) parts.push(billView(bill), el("ul", {}, ...(bill.bags || []).map((b) =>
        el("li", { textContent: `${b.parent_qr}: ${b.child_count} children, ${b.weight_kg} kg` }))));
    } else {
      if (view.bag) parts.push(bagView(view.bag));
      if (view.bag && view.bag.children && view.bag.children.length)
        parts.push(el("p", { textContent: `Children: ${view.bag.children.join(", ")}` }));
      if (view.parent) parts.push(el("h3", { textContent: "Parent" }), bagView(view.parent));
      if (view.bill) {
        const billStale = freshness(view.bill);
        if (billStale) parts.push(billStale);
        const bill = view.bill.data && view.bill.data.bill;
        parts.push(el("h3", { textContent: "Bill" }), bill ? billView(bill) : el("p", { textContent: "On no bill" }));
      }
      if (view.last_scans && view.last_scans.length) parts.push(el("h3", { textContent: "Last scans" }),
        el("ul", {}, ...view.last_scans.map((s) => el("li", { textContent: `${s.created_at} ${s.kind || ""} by ${s.username || s.user_id || "?"}` }))));
    }
    out.replaceChildren(...parts);
  });
  input.focus();
}
