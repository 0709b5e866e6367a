"""The sweep's self-contained HTML report: per-device tabs, an interactive latency-vs-mAP plot (hover shows the
point's config; the Pareto front joined), a sortable table of every row, and the devices' descriptions. No
network: the data is embedded as JSON and drawn by the page's own small script into SVG."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

KEEP = ("point", "point_label", "target", "precision", "device", "threads", "status", "reason", "emulated",
        "throttled", "latency_ms_median", "latency_ms_p90", "size_bytes", "peak_rss_mb", "map50_95", "map50",
        "map50_95_drop", "artifact")

SCRIPT = r"""
const data = JSON.parse(document.getElementById('sweep-data').textContent);
const devices = [...new Set(data.rows.map(r => r.device).filter(d => d))];
const tabs = document.getElementById('tabs'), plots = document.getElementById('plots');
const fmt = v => v === null || v === undefined ? '-' : (typeof v === 'number' ? (Number.isInteger(v) ? v : v.toFixed(4)) : v);
function plot(device) {
  const pts = data.rows.filter(r => r.device === device && r.latency_ms_median != null && r.map50_95 != null);
  const W = 640, H = 400, P = 50, svgNS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('width', W); svg.setAttribute('height', H); svg.setAttribute('class', 'plot');
  if (!pts.length) { return svg; }
  const xs = pts.map(r => r.latency_ms_median), ys = pts.map(r => r.map50_95);
  const x0 = Math.min(...xs) * 0.9, x1 = Math.max(...xs) * 1.1 || 1, y0 = Math.min(...ys) - 0.02, y1 = Math.max(...ys) + 0.02;
  const sx = x => P + (x - x0) / ((x1 - x0) || 1) * (W - 2 * P), sy = y => H - P - (y - y0) / ((y1 - y0) || 1) * (H - 2 * P);
  const add = (tag, attrs, text) => { const e = document.createElementNS(svgNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.appendChild(e); return e; };
  add('line', {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: '#444'});
  add('line', {x1: P, y1: P, x2: P, y2: H - P, stroke: '#444'});
  add('text', {x: W / 2, y: H - 12, 'text-anchor': 'middle'}, 'median latency (ms)' + (pts[0].emulated ? ' - emulated, not a speed claim' : ''));
  add('text', {x: 14, y: H / 2, transform: `rotate(-90 14 ${H / 2})`, 'text-anchor': 'middle'}, 'mAP50-95');
  for (const [v, s] of [[x0, 'start'], [x1, 'end']]) add('text', {x: sx(v), y: H - P + 16, 'text-anchor': s, 'font-size': 11}, v.toFixed(1));
  for (const v of [y0, y1]) add('text', {x: P - 4, y: sy(v), 'text-anchor': 'end', 'font-size': 11}, v.toFixed(3));
  const front = data.pareto.filter(f => f[3] === device).map(f => pts.find(r => r.point === f[0] && r.target === f[1] && r.precision === f[2])).filter(r => r);
  front.sort((a, b) => a.latency_ms_median - b.latency_ms_median);
  if (front.length > 1) add('polyline', {points: front.map(r => `${sx(r.latency_ms_median)},${sy(r.map50_95)}`).join(' '), fill: 'none', stroke: '#888', 'stroke-dasharray': '4 3'});
  const tip = document.getElementById('tip'), pk = data.picked && data.picked.key;
  for (const r of pts) {
    if (pk && r.point === pk[0] && r.target === pk[1] && r.precision === pk[2] && r.device === pk[3])
      add('circle', {cx: sx(r.latency_ms_median), cy: sy(r.map50_95), r: 13, fill: 'none', stroke: '#2ca02c', 'stroke-width': 3, class: 'picked'});
    const ok = r.status === 'passed' || r.status === 'reference';
    const c = add('circle', {cx: sx(r.latency_ms_median), cy: sy(r.map50_95), r: 6, class: 'mark', fill: ok ? '#1f77b4' : '#d62728', 'fill-opacity': 0.8});
    const text = `${r.target} ${r.precision} (${r.status})\n${r.point_label}\n${fmt(r.latency_ms_median)} ms, mAP50-95 ${fmt(r.map50_95)}`;
    c.appendChild(document.createElementNS(svgNS, 'title')).textContent = text;
    c.addEventListener('mouseenter', e => { tip.textContent = text; tip.style.display = 'block'; tip.style.left = (e.pageX + 12) + 'px'; tip.style.top = (e.pageY + 12) + 'px'; });
    c.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  }
  return svg;
}
function show(device) {
  for (const b of tabs.children) b.classList.toggle('active', b.dataset.device === device);
  for (const p of plots.children) p.style.display = p.dataset.device === device ? 'block' : 'none';
}
for (const d of devices) {
  const b = document.createElement('button'); b.textContent = d; b.dataset.device = d; b.onclick = () => show(d); tabs.appendChild(b);
  const div = document.createElement('div'); div.dataset.device = d; div.appendChild(plot(d));
  const info = data.devices[d]; if (info) { const pre = document.createElement('pre'); pre.textContent = JSON.stringify(info, null, 1); div.appendChild(pre); }
  plots.appendChild(div);
}
if (data.picked) {
  const r = data.rows.find(x => x.point === data.picked.key[0] && x.target === data.picked.key[1] && x.precision === data.picked.key[2] && x.device === data.picked.key[3]);
  const box = document.getElementById('ship');
  box.className = 'ship';
  box.textContent = `Ship: ${r.target} ${r.precision} at ${r.point_label} on ${r.device} (ringed in green). ${data.picked.why}`;
}
if (devices.length) show(data.picked ? data.picked.key[3] : devices[0]);
const table = document.getElementById('rows'), cols = data.columns;
const head = table.createTHead().insertRow(), body = table.createTBody();
let sortKey = null, asc = true;
function fill() {
  body.innerHTML = '';
  const rows = [...data.rows];
  if (sortKey) rows.sort((a, b) => { const x = a[sortKey], y = b[sortKey]; if (x == null) return 1; if (y == null) return -1; return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  for (const r of rows) { const tr = body.insertRow(); for (const c of cols) tr.insertCell().textContent = fmt(r[c]); }
}
for (const c of cols) { const th = document.createElement('th'); th.textContent = c; th.onclick = () => { asc = sortKey === c ? !asc : true; sortKey = c; fill(); }; head.appendChild(th); }
fill();
document.body.dataset.rendered = 'yes';
"""

STYLE = """body{font-family:sans-serif;margin:20px}button{margin-right:4px;padding:4px 10px}button.active{font-weight:bold}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}th{cursor:pointer;background:#eee}
#tip{position:absolute;display:none;background:#ffd;border:1px solid #999;padding:4px;white-space:pre;font-size:12px}
.ship{background:#e8f5e9;border:2px solid #2ca02c;padding:10px;font-size:16px;margin-bottom:12px;max-width:900px}
pre{font-size:11px;background:#f6f6f6;padding:6px;max-width:900px;overflow:auto}"""


def write_html(path: Path, rows: list[dict[str, Any]], axes: list[str], front: list[dict[str, Any]],
               devices: dict[str, Any], picked: tuple[dict[str, Any], str] | None = None) -> None:
    """Write the report; every row of the sweep is one mark in its device's plot (when it has both figures);
    ``picked`` (the row to ship and why) is said at the top and ringed in its plot."""
    columns = ["point_label", *axes, *[k for k in KEEP if k not in ("point", "point_label")]]
    data = {"rows": [{k: r.get(k) for k in {*KEEP, *axes}} for r in rows], "columns": columns,
            "pareto": [(r["point"], r["target"], r["precision"], r.get("device")) for r in front],
            "devices": devices,
            "picked": None if picked is None else {"key": [picked[0]["point"], picked[0]["target"],
                                                           picked[0]["precision"], picked[0].get("device")],
                                                   "why": picked[1]}}
    blob = json.dumps(data, default=str).replace("</", "<\\/")  # no early end of the script element
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeopt sweep</title><style>{STYLE}</style>"
            f"</head><body><h1>edgeopt sweep: {html.escape(', '.join(axes))}</h1><div id='ship'></div><div id='tabs'></div>"
            f"<div id='plots'></div><div id='tip'></div><h2>All rows</h2><table id='rows'></table>"
            f"<script type='application/json' id='sweep-data'>{blob}</script><script>{SCRIPT}</script></body></html>")
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
