// Charts drawn as SVG: lines, stacked areas and bars over a shared category axis. Every mark
// carries a <title> (hover and screen-reader text); the table view beside each chart holds the
// same numbers for keyboards and copy-paste.

const NS = 'http://www.w3.org/2000/svg';
// Okabe–Ito: tells apart under the common colour-vision deficiencies.
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000', '#7f7f7f'];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Round steps (1, 2, 5 × 10^k) from 0 to at least `max`. */
export function niceTicks(max, count = 5) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v < max + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/**
 * Draws `series` ([{label, data: [numbers]}]) over `categories` (x labels) into `container`.
 * kind: 'line' | 'area' (stacked) | 'bar' (stacked). format: value → text.
 */
export function drawChart(container, { categories, series, kind = 'line', format = String, label = 'Chart' }) {
  container.replaceChildren();
  // Drawn at the box's own width, so text keeps its size in narrow boxes.
  const width = Math.max(300, Math.round(container.clientWidth || 820) - 8);
  const height = width < 500 ? 220 : 300, left = 64, right = 40, top = 12, bottom = 44;
  const plotW = width - left - right, plotH = height - top - bottom;
  const stacked = kind !== 'line';
  const n = categories.length;
  const totals = categories.map((_, i) => series.reduce((s, x) => s + (Number(x.data[i]) || 0), 0));
  const max = stacked ? Math.max(0, ...totals) : Math.max(0, ...series.flatMap((s) => s.data.map(Number)));
  const ticks = niceTicks(max);
  const top_ = ticks[ticks.length - 1] || 1;
  const y = (v) => top + plotH - (v / top_) * plotH;
  const slot = plotW / Math.max(n, 1);
  const x = (i) => left + slot * i + slot / 2;

  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart' });
  root.append(svg('title', {}, label));
  for (const t of ticks) {
    root.append(svg('line', { x1: left, x2: width - right, y1: y(t), y2: y(t), class: 'grid' }));
    root.append(svg('text', { x: left - 6, y: y(t) + 4, class: 'tick', 'text-anchor': 'end' }, format(t)));
  }
  // Long labels are shortened, and only as many shown as fit side by side.
  const short = categories.map((c) => (String(c).length > 24 ? `${String(c).slice(0, 23)}…` : String(c)));
  const labelWidth = Math.max(70, Math.max(0, ...short.map((c) => c.length)) * 6.5 + 12);
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / labelWidth))));
  short.forEach((c, i) => {
    if (i % every === 0) root.append(svg('text', { x: x(i), y: height - bottom + 18, class: 'tick', 'text-anchor': 'middle' }, c));
  });

  const base = new Array(n).fill(0);
  series.forEach((s, k) => {
    const colour = s.colour || PALETTE[k % PALETTE.length];
    const values = s.data.map((v) => Number(v) || 0);
    const group = svg('g', { class: `series series-${k}`, 'data-label': s.label });
    if (kind === 'bar') {
      const w = Math.max(1, slot * 0.7);
      values.forEach((v, i) => {
        const y0 = y(base[i]), y1 = y(base[i] + v);
        const bar = svg('rect', { x: x(i) - w / 2, y: y1, width: w, height: Math.max(0, y0 - y1), fill: colour });
        bar.append(svg('title', {}, `${s.label} — ${categories[i]}: ${format(v)}`));
        group.append(bar);
      });
    } else {
      const tops = values.map((v, i) => [x(i), y((stacked ? base[i] : 0) + v)]);
      if (kind === 'area') {
        const bottoms = base.map((b, i) => [x(i), y(b)]).reverse();
        const d = 'M' + [...tops, ...bottoms].map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join('L') + 'Z';
        group.append(svg('path', { d, fill: colour, 'fill-opacity': 0.55, stroke: colour, 'stroke-width': 1.5 }));
      } else {
        const d = 'M' + tops.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join('L');
        group.append(svg('path', { d, fill: 'none', stroke: colour, 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '6 4' : '' }));
      }
      tops.forEach(([a, b], i) => {
        const dot = svg('circle', { cx: a, cy: b, r: n > 60 ? 1.5 : 3, fill: colour });
        dot.append(svg('title', {}, `${s.label} — ${categories[i]}: ${format(values[i])}`));
        group.append(dot);
      });
    }
    if (stacked) values.forEach((v, i) => (base[i] += v));
    root.append(group);
  });
  container.append(root);

  const legend = document.createElement('ul');
  legend.className = 'legend';
  series.forEach((s, k) => {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = s.colour || PALETTE[k % PALETTE.length];
    item.append(swatch, document.createTextNode(s.label));
    legend.append(item);
  });
  container.append(legend);
}
