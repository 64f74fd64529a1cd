// The live dashboard: counters and recent activity from the event stream (GET /dashboard/stream, read with fetch so
// the access token travels in the Authorization header, never in a URL), trend charts (trends.js, loaded with this
// screen only), and every part that is not fresh marked with its age. A dispatcher sees their own area.
import { api, problem } from "./session.js";
import { el, facts, freshness } from "./dom.js";
import { charts } from "./trends.js";

const RECENT = 15; // activity rows kept on screen
const MAX_BACKOFF_MS = 30000;
const SILENT_PERIODS = 3; // a stream that said nothing for this many heartbeat periods is dead: reopen it
const DEFAULT_HEARTBEAT_S = 10;

// Server-Sent Events from a fetch body: yields {id, event, data, retry, heartbeat} for each complete event. Comments
// are heartbeats; the first one names their period (": heartbeat 10"). `alive()` is called on every chunk read.
async function* events(body, alive) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    alive();
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = { id: null, event: "message", data: [], retry: null, heartbeat: null };
      for (const line of block.split("\n")) {
        const period = /^: ?heartbeat ([0-9.]+)$/.exec(line);
        if (period) message.heartbeat = Number(period[1]);
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data.push(text);
        else if (field === "id" || field === "event") message[field] = text;
        else if (field === "retry") message.retry = Number(text);
      }
      if (message.data.length || message.retry != null || message.heartbeat != null) {
        yield { ...message, data: message.data.join("\n") };
      }
    }
  }
}

const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const asOf = (iso) => el("p", { className: "as-of", textContent: iso ? `As of ${when(iso)}` : "" });
const n = (value) => (value == null ? "–" : Number(value).toLocaleString());

function counters(totals) {
  return facts([["Parents", `${n(totals.parents.total)} (${n(totals.parents.pending)} pending, `
    + `${n(totals.parents.in_progress)} filling, ${n(totals.parents.completed)} complete)`],
  ["Children", n(totals.children)], ["Scans today", n(totals.scans_today)],
  ["Scans in the last hour", n(totals.scans_last_hour)], ["Completed today", n(totals.completed_today)],
  ["Billed today", `${n(totals.billed_today.parents)} parents, ${n(totals.billed_today.weight_kg)} kg`]]);
}

function areaTable(areas) {
  const head = el("tr", {}, ...["Area", "Parents", "Complete", "Children", "Scans today", "Last hour"]
    .map((t) => el("th", { scope: "col", textContent: t })));
  return el("table", { className: "areas" }, el("thead", {}, head), el("tbody", {}, ...areas.map((a) => el("tr", {},
    el("th", { scope: "row", textContent: a.dispatch_area }),
    ...[a.parents.total, a.parents.completed, a.children, a.scans_today, a.scans_last_hour]
      .map((v) => el("td", { textContent: n(v) }))))));
}

const scanLine = (s) => `${when(s.created_at)} ${s.username || "?"} — ${s.kind === "parent" ? `parent ${s.parent_qr}`
  : `${s.child_qr} → ${s.parent_qr}`}${s.repeat ? " (repeat)" : ""}${s.dispatch_area ? ` · ${s.dispatch_area}` : ""}`;
const billLine = (b) => `${when(b.created_at)} ${b.username || "?"} — ${b.bill_id} ${b.kind}`
  + (b.parent_qr ? ` ${b.parent_qr}` : "");

export async function mount(root, user) {
  const live = el("p", { id: "dash-live", className: "live", role: "status" });
  const stats = el("section", { id: "dash-stats", ariaLabel: "counters" });
  const scans = el("ol", { id: "dash-scans", className: "activity" });
  const bills = el("ol", { id: "dash-bills", className: "activity" });
  const activityStale = el("div");
  const trends = el("section", { id: "dash-trends", ariaLabel: "trends" });
  const billing = user.role !== "dispatcher";
  root.replaceChildren(el("h1", { textContent: user.dispatch_area ? `Dashboard: ${user.dispatch_area}` : "Dashboard" }),
    live, stats, el("h2", { textContent: "Recent scans" }), activityStale, scans,
    ...(billing ? [el("h2", { textContent: "Recent bill events" }), bills] : []),
    el("h2", { textContent: "Trends (14 days)" }), trends);

  const seen = { scans: new Set(), bills: new Set() };
  const prepend = (list, set, item, line, live = true) => {
    if (set.has(item.id)) return; // the replay after a reconnect may repeat what the snapshot showed
    set.add(item.id);
    list.prepend(el("li", { textContent: line(item), className: live ? "new" : "" })); // what the stream brings flashes
    while (list.children.length > RECENT) list.lastElementChild.remove();
  };

  function renderStats(body) {
    const parts = [freshness(body.scanning)];
    const data = body.scanning && body.scanning.data;
    if (data) parts.push(counters(data.totals), ...(data.areas.length > 1 ? [areaTable(data.areas)] : []));
    if (body.billing) {
      parts.push(freshness(body.billing));
      const b = body.billing.data;
      if (b) parts.push(facts([["Bills", `${n(b.bills.total)} (${n(b.bills.new)} new, ${n(b.bills.processing)} loading, `
        + `${n(b.bills.completed)} completed)`], ["Bills today", `${n(b.today.created)} created, ${n(b.today.completed)} completed`]]));
    }
    if (body.down && body.down.length) parts.push(el("p", { className: "stale", textContent: `Not answering: ${body.down.join(", ")}` }));
    stats.replaceChildren(...parts.filter(Boolean), asOf(body.as_of));
  }

  async function loadActivity() {
    const response = await api("/dashboard/activity").catch(() => null);
    if (!response || !response.ok) return;
    const body = await response.json();
    activityStale.replaceChildren(...[freshness(body.scans), freshness(body.bill_events)].filter(Boolean));
    for (const s of [...((body.scans.data || {}).items || [])].reverse()) prepend(scans, seen.scans, s, scanLine, false);
    if (body.bill_events) for (const b of [...((body.bill_events.data || {}).items || [])].reverse())
      prepend(bills, seen.bills, b, billLine, false);
  }

  async function loadTrends() {
    const response = await api("/dashboard/trends?days=14").catch(() => null);
    if (!response) { trends.replaceChildren(el("p", { className: "error", textContent: "No network: trends need the server" })); return; }
    if (!response.ok) { trends.replaceChildren(el("p", { className: "error", textContent: await problem(response) })); return; }
    const body = await response.json();
    // Trends are held for minutes (a day's bars move slowly): say as of when, beside the live counters above.
    trends.replaceChildren(asOf(body.as_of), ...[freshness(body.scanning), freshness(body.billing)].filter(Boolean), ...charts(body));
  }

  const abort = new AbortController();
  let lastId = null;
  let retryMs = 2000;
  const sleep = (ms) => new Promise((resolve) => { const t = setTimeout(resolve, ms);
    abort.signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true }); });

  // One stream until it ends: "live" (it ran, then dropped or went silent), "expired" (the token ran out),
  // "failed" (no answer) or "denied" (401/403, shown). A connection that died without closing (Wi-Fi gone, a peer
  // frozen) sends nothing, not even heartbeats: a watchdog aborts it after SILENT_PERIODS heartbeat periods.
  async function once() {
    const connection = new AbortController();
    const stop = () => connection.abort();
    abort.signal.addEventListener("abort", stop, { once: true });
    let heard = Date.now();
    let heartbeatMs = DEFAULT_HEARTBEAT_S * 1000;
    const watchdog = setInterval(() => {
      if (Date.now() - heard > SILENT_PERIODS * heartbeatMs) connection.abort();
    }, 1000);
    try {
      const response = await api("/dashboard/stream", { signal: connection.signal,
        headers: { Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": lastId } : {}) } });
      if (response.status === 401 || response.status === 403) {
        live.textContent = `Not live: ${await problem(response)}`;
        live.dataset.state = "down";
        return "denied";
      }
      if (!response.ok) return "failed";
      live.textContent = "Live";
      live.dataset.state = "live";
      for await (const message of events(response.body, () => { heard = Date.now(); })) {
        if (message.heartbeat) heartbeatMs = message.heartbeat * 1000;
        if (message.retry) retryMs = message.retry;
        if (message.id) lastId = message.id;
        if (!message.data) continue;
        const data = JSON.parse(message.data);
        if (message.event === "stats") renderStats(data);
        else if (message.event === "scan") prepend(scans, seen.scans, data, scanLine);
        else if (message.event === "bill") prepend(bills, seen.bills, data, billLine);
        else if (message.event === "reset") await loadActivity();
        else if (message.event === "expired") return "expired";
        else if (message.event === "reconnect") break;
      }
      return "live";
    } catch {
      return live.dataset.state === "live" ? "live" : "failed"; // dropped, aborted by the watchdog, or no network
    } finally {
      clearInterval(watchdog);
      abort.signal.removeEventListener("abort", stop);
    }
  }

  // Reopened with Last-Event-ID after a drop (the server replays what was missed or says `reset`), at once after
  // `expired` (api() refreshes the token first), after the server's `retry` otherwise, backing off while it fails.
  async function follow() {
    let failures = 0;
    while (!abort.signal.aborted) {
      const outcome = await once();
      if (abort.signal.aborted || outcome === "denied") return;
      if (outcome === "expired") continue;
      failures = outcome === "live" ? 0 : failures + 1;
      live.textContent = `Reconnecting${navigator.onLine ? "" : " (offline)"}: the counters below may be out of date`;
      live.dataset.state = "reconnecting";
      await sleep(Math.min(retryMs * 2 ** Math.max(0, failures - 1), MAX_BACKOFF_MS));
    }
  }

  // The counters come with the stream: its first event is a stats snapshot (the body of GET /dashboard/stats), so
  // they are not fetched beside it. Activity is: a stream opened without Last-Event-ID replays nothing.
  live.textContent = "Connecting…";
  await loadActivity();
  follow();
  loadTrends();
  return () => abort.abort();
}
