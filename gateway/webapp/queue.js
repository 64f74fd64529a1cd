// The scan queue: every scan goes through it, online or not. Persisted in localStorage per user (a reload, a crash,
// a logout keep it; another user never sees it), sent in order with its scan_id, so a retry after a lost answer
// replays the server's first result instead of writing twice (the server keeps scan_ids for its idempotency window).
export function newId() {
  // crypto.randomUUID needs a secure context; a LAN address over plain http is not one.
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const keyOf = (userId) => `bagtrack.queue.${userId}`;
const stored = (key) => JSON.parse(localStorage.getItem(key) || "[]");

// Scans this user has on this device and the server has not taken (waiting or flagged).
export const unsent = (userId) => stored(keyOf(userId)).length;

// One queue per user on this page, whichever screen is open: it goes on sending while the worker looks something up.
const queues = new Map();
export function queueFor(userId, windowSeconds, send) {
  if (!queues.has(userId)) queues.set(userId, new ScanQueue(userId, windowSeconds, send));
  return queues.get(userId);
}
// Signing out stops every queue on the page: nothing of one user's is sent with the next user's token.
export function stopQueues() {
  for (const queue of queues.values()) queue.stop();
  queues.clear();
}

export class ScanQueue extends EventTarget {
  constructor(userId, windowSeconds, send) {
    super();
    this.key = keyOf(userId);
    this.windowMs = windowSeconds * 1000;
    this.send = send; // async (item) => {kind: "ok"|"network"|"retry"|"rejected"|"auth", body?, detail?, after?}
    this.items = stored(this.key);
    this.running = false;
    this.timer = null;
  }
  // Every change re-reads the stored list first and writes it back in the same task, so a second tab of the same
  // user adds to the list instead of overwriting it (both may send an item: its scan_id makes that harmless).
  change(mutate) {
    this.items = stored(this.key);
    mutate();
    localStorage.setItem(this.key, JSON.stringify(this.items));
    this.emit("change");
  }
  find(scanId) { return this.items.find((i) => i.scan_id === scanId); }
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
  get waiting() { return this.items.filter((i) => i.state === "queued").length; }
  add(item) {
    const queued = { ...item, scan_id: newId(), at: Date.now(), state: "queued" };
    this.change(() => this.items.push(queued));
    this.pump();
    return queued;
  }
  remove(scanId) { this.change(() => { this.items = this.items.filter((i) => i.scan_id !== scanId); }); }
  retry(scanId) {
    this.change(() => { const item = this.find(scanId); if (item) Object.assign(item, { state: "queued", detail: null, force: true }); });
    this.pump();
  }
  mark(scanId, state, detail) { this.change(() => { const item = this.find(scanId); if (item) Object.assign(item, { state, detail }); }); }
  // A child behind a parent scan that failed waits (flagged) until that parent is re-sent or discarded.
  blocked(item) {
    return item.kind === "child" && this.items.some((p) => p.kind === "parent" && p.qr_id === item.parent_qr
      && p.state !== "queued" && this.items.indexOf(p) < this.items.indexOf(item));
  }
  later(ms) { clearTimeout(this.timer); this.timer = setTimeout(() => this.pump(), ms); }
  stop() { clearTimeout(this.timer); this.stopped = true; } // signed out: nothing more is sent from this page
  async pump() {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      for (;;) {
        this.items = stored(this.key);
        const next = this.items.find((i) => i.state === "queued" && !this.blocked(i));
        if (!next) break;
        if (!next.force && Date.now() - next.at > this.windowMs) {
          this.mark(next.scan_id, "stale", "older than the server's replay window: send it again only if it was not recorded");
          continue;
        }
        const result = await this.send(next);
        if (this.stopped) break;
        if (result.kind === "ok") {
          this.remove(next.scan_id);
          this.emit("landed", { item: next, body: result.body });
        } else if (result.kind === "rejected") {
          this.mark(next.scan_id, result.conflict ? "conflict" : "failed", result.detail);
          this.emit("rejected", { item: next, detail: result.detail });
        } else if (result.kind === "retry") {
          this.emit("paced", { after: result.after });
          await new Promise((r) => setTimeout(r, result.after * 1000));
        } else { // network down or signed out: keep everything, try again later
          this.emit("offline", { kind: result.kind });
          this.later(result.kind === "auth" ? 15000 : 2000);
          break;
        }
      }
    } finally { this.running = false; }
    this.emit("change");
  }
}
