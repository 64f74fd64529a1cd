// Trend charts for the dashboard (only that screen loads this module): one small SVG bar chart per series of
// GET /dashboard/trends, each bar titled with its day and value, and the numbers as a table for keyboard and
// screen-reader users. Colours come from app.css (the Content-Security-Policy allows no inline styles).
import { el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 300, H = 90, GAP = 2;
const valueOf = (day, series) => Number(day[series.key]) || 0;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function bars(title, days, series) {
  const max = Math.max(1, ...days.flatMap((d) => series.map((s) => valueOf(d, s))));
  const slot = W / Math.max(1, days.length);
  const width = Math.max(1, (slot - GAP) / series.length);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H + 14}`, role: "img", class: "chart",
    "aria-label": `${title}: ${series.map((s) => s.label).join(", ")} per day` });
  days.forEach((day, i) => {
    series.forEach((s, j) => {
      const value = valueOf(day, s);
      const h = Math.round((value / max) * H);
      const bar = svg("rect", { x: (i * slot + j * width).toFixed(1), y: H - h, width: width.toFixed(1),
        height: Math.max(h, value ? 1 : 0), class: `bar bar-${j}` });
      bar.append(Object.assign(svg("title"), { textContent: `${day.day} ${s.label}: ${value.toLocaleString()}` }));
      chart.append(bar);
    });
  });
  const first = days[0], last = days[days.length - 1];
  if (first) chart.append(Object.assign(svg("text", { x: 0, y: H + 12, class: "axis" }), { textContent: first.day.slice(5) }));
  if (last && last !== first) chart.append(Object.assign(svg("text", { x: W, y: H + 12, class: "axis", "text-anchor": "end" }),
    { textContent: last.day.slice(5) }));
  const legend = el("p", { className: "legend" }, ...series.map((s, j) => el("span", { className: `key key-${j}`,
    textContent: `${s.label} (max ${Math.max(0, ...days.map((d) => valueOf(d, s))).toLocaleString()})` })));
  const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col", textContent: "Day" }),
    ...series.map((s) => el("th", { scope: "col", textContent: s.label })))),
  el("tbody", {}, ...days.map((d) => el("tr", {}, el("th", { scope: "row", textContent: d.day }),
    ...series.map((s) => el("td", { textContent: valueOf(d, s).toLocaleString() }))))));
  return el("figure", { className: "trend" }, el("figcaption", { textContent: title }), chart, legend,
    el("details", {}, el("summary", { textContent: "Numbers" }), table));
}

export function charts(body) {
  const out = [];
  const scanning = body.scanning && body.scanning.data;
  if (scanning) {
    out.push(bars("Scans", scanning.days, [{ key: "scans", label: "scans" }]),
      bars("Parents", scanning.days, [{ key: "completed_parents", label: "completed" }, { key: "billed_parents", label: "billed" }]));
  }
  const billing = body.billing && body.billing.data;
  if (billing) out.push(bars("Bills", billing.days, [{ key: "created", label: "created" }, { key: "completed", label: "completed" }]));
  return out;
}
