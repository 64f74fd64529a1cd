// The two DOM helpers every screen builds with (textContent only: nothing from the server is parsed as HTML).
// `attrs` are element properties, except `dataset` (read-only on an element: its entries are copied in).
export const el = (tag, { dataset, ...attrs } = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), attrs);
  if (dataset) Object.assign(node.dataset, dataset);
  node.append(...children);
  return node;
};

// A definition list of [term, value] pairs, leaving out the empty ones.
export function facts(pairs) {
  const list = el("dl");
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    list.append(el("dt", { textContent: term }), el("dd", { textContent: String(value) }));
  }
  return list;
}

// A part of a composed answer (the dashboard's {status, age_seconds, source, ...}) that is not fresh, said with its
// age; null when it is fresh.
export function freshness(part) {
  if (!part || part.status === "fresh") return null;
  const age = part.age_seconds == null ? "" : ` ${Math.round(part.age_seconds)} s old`;
  return el("p", { className: "stale", dataset: { source: part.source }, textContent: part.status === "stale"
    ? `Stale: ${part.source}'s data is${age} (the last it gave)` : `${part.source} is unavailable: nothing to show yet` });
}
