// The two DOM helpers every screen builds with (textContent only: nothing from the server is parsed as HTML).
export const el = (tag, attrs = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), attrs);
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
