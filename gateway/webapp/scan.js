// The scan station: one input that keeps the focus; a parent, then its children, each Enter a scan. Every scan goes
// through the queue (queue.js), so a dropped network only means "waiting", never a lost scan.
import { api, problem } from "./session.js";
import { el } from "./dom.js";
import { queueFor } from "./queue.js";

const DOUBLE_READ_MS = 1000;

let audio = null;
function beep(kind) {
  try {
    audio ??= new AudioContext();
    const tone = { ok: [880, 0.08], done: [1320, 0.25], queued: [600, 0.12], error: [220, 0.4] }[kind];
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = tone[0];
    gain.gain.value = 0.15;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + tone[1]);
  } catch { /* no sound device: the colours still say it */ }
}

function normalise(raw) {
  return raw.replace(/[\u0000-\u001f\u007f\u200b-\u200d\u2060\ufeff]/g, "").trim().toUpperCase();
}

async function send(item) {
  const body = item.kind === "parent" ? { qr_id: item.qr_id, scan_id: item.scan_id }
    : { parent_qr: item.parent_qr, child_qr: item.child_qr, scan_id: item.scan_id };
  if (item.dispatch_area) body.dispatch_area = item.dispatch_area;
  if (!navigator.onLine) return { kind: "network" };
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 10000);
  let response;
  try {
    response = await api(`/scans/${item.kind}`, { method: "POST", body: JSON.stringify(body), signal: abort.signal });
  } catch { return { kind: "network" }; } finally { clearTimeout(timer); }
  if (response.ok) return { kind: "ok", body: await response.json() };
  if (response.status === 401) return { kind: "auth" };
  const after = Number(response.headers.get("Retry-After")) || 2;
  if (response.status === 429 || response.status >= 500) return { kind: "retry", after };
  return { kind: "rejected", conflict: response.status === 409, detail: await problem(response) };
}

export async function mount(root, user) {
  const refResponse = await api("/scans/reference");
  const ref = refResponse.ok ? await refResponse.json() : null;
  const formats = ref ? ref.parent_formats.map((f) => ({ re: new RegExp(f.pattern), capacity: f.capacity })) : [];
  const childRe = ref ? new RegExp(ref.child_pattern) : /^[A-Z0-9-]{4,20}$/;
  const queue = queueFor(user.id, ref ? ref.idempotency_window_seconds : 48 * 3600, send);
  const state = { parent: null, lastChild: null, last: { code: "", at: 0 } };

  const input = el("input", { id: "scan-input", className: "scan-input", autocomplete: "off", spellcheck: false,
    ariaLabel: "Scan a QR code", placeholder: "Scan a parent, then its children" });
  const status = el("p", { id: "scan-status", className: "feedback", role: "status" });
  const count = el("p", { id: "scan-count", className: "count" });
  const waiting = el("p", { id: "scan-waiting", className: "waiting", ariaLive: "polite" });
  const undo = el("button", { id: "scan-undo", type: "button", textContent: "Undo last child" });
  const next = el("button", { id: "scan-next", type: "button", textContent: "Next parent (Esc)" });
  const flagged = el("ul", { id: "scan-flagged", className: "flagged" });
  let area = null;
  if (user.role === "admin" && !user.dispatch_area) {
    const areas = await api("/auth/reference").then((r) => (r.ok ? r.json() : { areas: [] }));
    area = el("select", { id: "scan-area", ariaLabel: "Area of new parents" },
      ...areas.areas.map((a) => el("option", { value: a, textContent: a })));
  }
  root.replaceChildren(el("h1", { textContent: "Scan station" }), ...(area ? [el("label", {}, "Area of new parents ", area)] : []),
    input, status, count, el("div", { className: "row" }, undo, next), waiting, flagged);

  const say = (text, kind) => { status.textContent = text; status.dataset.kind = kind; beep(kind); };
  const pendingFor = (qr) => queue.items.filter((i) => i.kind === "child" && i.parent_qr === qr && i.state === "queued").length;
  const render = () => {
    const p = state.parent;
    count.textContent = p ? `${p.qr_id}: ${p.child_count + pendingFor(p.qr_id)}/${p.capacity}`
      + (pendingFor(p.qr_id) ? ` (${pendingFor(p.qr_id)} waiting)` : "") + (p.status === "completed" ? " — complete" : "")
      : "No parent: scan a parent bag";
    count.dataset.complete = p && p.status === "completed" ? "yes" : "no";
    const n = queue.waiting;
    waiting.textContent = n ? `${n} scan${n === 1 ? "" : "s"} waiting to be sent${navigator.onLine ? "" : " (offline)"}` : "";
    flagged.replaceChildren(...queue.items.filter((i) => i.state !== "queued" || queue.blocked(i)).map((i) => {
      const what = i.kind === "parent" ? `parent ${i.qr_id}` : `child ${i.child_qr} → ${i.parent_qr}`;
      const why = i.state === "queued" ? "waiting: its parent scan failed" : `${i.state}: ${i.detail}`;
      const discard = el("button", { type: "button", textContent: "Discard" });
      discard.addEventListener("click", () => { queue.remove(i.scan_id); input.focus(); });
      const again = el("button", { type: "button", textContent: "Send again" });
      again.addEventListener("click", () => { queue.retry(i.scan_id); input.focus(); });
      return el("li", { dataset: { state: i.state } }, `${what} — ${why} `, again, discard);
    }));
  };
  const screen = new AbortController(); // the listeners this screen adds, removed when it is left
  const on = { signal: screen.signal };
  queue.addEventListener("change", render, on);
  queue.addEventListener("landed", ({ detail: { item, body } }) => {
    if (!state.parent || state.parent.qr_id === body.parent.qr_id) state.parent = body.parent;
    if (item.kind === "child") state.lastChild = { parent_qr: item.parent_qr, child_qr: item.child_qr, landed: true };
    if (!item.quiet) {
      const done = body.parent.status === "completed";
      const text = item.kind === "parent" ? `Parent ${body.parent.qr_id} ${body.created ? "created" : "selected"}`
        : `${item.child_qr} ${body.repeat ? "already on this parent (repeat)" : "added"}` + (done ? " — parent complete" : "");
      say(text, done ? "done" : "ok");
    }
    render();
  }, on);
  queue.addEventListener("rejected", ({ detail }) => { say(detail.detail, "error"); render(); }, on);
  queue.addEventListener("offline", () => render(), on);

  function scan(raw) {
    const code = normalise(raw);
    if (!code) return;
    const now = Date.now();
    if (code === state.last.code && now - state.last.at < DOUBLE_READ_MS) return; // a scanner's double read
    state.last = { code, at: now };
    const parentFormat = formats.find((f) => f.re.test(code));
    if (parentFormat) {
      state.parent = { qr_id: code, child_count: 0, capacity: parentFormat.capacity, status: "pending" };
      state.lastChild = null;
      queue.add({ kind: "parent", qr_id: code, ...(area ? { dispatch_area: area.value } : {}) });
      if (queue.waiting) say(`Parent ${code} queued`, "queued");
    } else if (childRe.test(code)) {
      if (!state.parent) { say(`${code}: scan a parent bag first`, "error"); return; }
      const item = queue.add({ kind: "child", parent_qr: state.parent.qr_id, child_qr: code });
      state.lastChild = { parent_qr: item.parent_qr, child_qr: code, scan_id: item.scan_id };
      if (queue.find(item.scan_id) && !navigator.onLine) say(`${code} queued (offline)`, "queued");
    } else {
      say(`${code} is not a bag QR: a parent looks like ${ref ? ref.parent_formats.map((f) => f.pattern).join(" or ") : "SB12345"}`, "error");
    }
    render();
  }

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); scan(input.value); input.value = ""; }
    if (event.key === "Escape") { next.click(); }
  });
  // The input never loses the focus to nowhere: a click elsewhere, or focus landing on the page, comes back.
  input.addEventListener("blur", () => setTimeout(() => {
    if (document.activeElement === document.body && root.isConnected) input.focus();
  }, 0));
  undo.addEventListener("click", async () => {
    const last = state.lastChild;
    input.focus();
    if (!last) { say("Nothing to undo", "error"); return; }
    const queued = last.scan_id && queue.find(last.scan_id);
    if (queued) { queue.remove(queued.scan_id); say(`${last.child_qr} removed before it was sent`, "ok"); }
    else {
      const response = await api(`/bags/${encodeURIComponent(last.parent_qr)}/children/${encodeURIComponent(last.child_qr)}`,
        { method: "DELETE" }).catch(() => null);
      if (!response) { say("No network: undo needs the server", "error"); return; }
      if (!response.ok) { say(await problem(response), "error"); return; }
      const bag = await api(`/bags/${encodeURIComponent(last.parent_qr)}`);
      if (bag.ok && state.parent && state.parent.qr_id === last.parent_qr) state.parent = await bag.json();
      say(`${last.child_qr} taken off ${last.parent_qr}`, "ok");
    }
    state.lastChild = null;
    render();
  });
  next.addEventListener("click", () => { state.parent = null; state.lastChild = null; say("Scan the next parent", "ok"); render(); input.focus(); });
  window.addEventListener("online", () => queue.pump(), on);
  window.addEventListener("offline", render, on);
  render();
  input.focus();
  queue.pump();
  return () => screen.abort(); // leaving the screen: the queue goes on sending; only this screen's listeners go
}
