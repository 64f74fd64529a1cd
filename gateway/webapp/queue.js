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
  save() { localStorage.setItem(this.key, JSON.stringify(this.items)); this.emit("change"); }
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
  get waiting() { return this.items.filter((i) => i.state === "queued").length; }
  add(item) {
    const queued = { ...item, scan_id: newId(), at: Date.now(), state: "queued" };
    this.items.push(queued);
    this.save();
    this.pump();
    return queued;
  }
  remove(scanId) { this.items = this.items.filter((i) => i.scan_id !== scanId); this.save(); }
  retry(scanId) {
    const item = this.items.find((i) => i.scan_id === scanId);
    if (item) { item.state = "queued"; item.detail = null; item.force = true; this.save(); this.pump(); }
  }
  // A child behind a parent scan that failed waits (flagged) until that parent is re-sent or discarded.
  blocked(item) {
    return item.kind === "child" && this.items.some((p) => p.kind === "parent" && p.qr_id === item.parent_qr
      && p.state !== "queued" && this.items.indexOf(p) < this.items.indexOf(item));
  }
  later(ms) { clearTimeout(this.timer); this.timer = setTimeout(() => this.pump(), ms); }
  async pump() {
    if (this.running) return;
    this.running = true;
    try {
      for (;;) {
        const next = this.items.find((i) => i.state === "queued" && !this.blocked(i));
        if (!next) break;
        if (!next.force && Date.now() - next.at > this.windowMs) {
          next.state = "stale";
          next.detail = "older than the server's replay window: send it again only if it was not recorded";
          this.save();
          continue;
        }
        const result = await this.send(next);
        if (result.kind === "ok") {
          this.items = this.items.filter((i) => i !== next);
          this.save();
          this.emit("landed", { item: next, body: result.body });
        } else if (result.kind === "rejected") {
          next.state = result.conflict ? "conflict" : "failed";
          next.detail = result.detail;
          this.save();
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
