// s1mpled dashboard: renders what the dashboard server sends over /ws (hello, then updates).
// The server does all the bookkeeping (s1mpled/dashboard/view.py); this only applies its updates and
// draws. Amounts arrive as exact strings and are shown as such; only the charts turn them into numbers.
"use strict";

const FILLS_SHOWN = 50;
const instances = new Map(); // id -> the view the server sent, kept up to date
let drawPending = false;

// ---------------------------------------------------------------- the connection to the server

function connect(attempt) {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => setConn("live", "ok");
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    if (data.type === "hello") {
      instances.clear();
      for (const inst of data.instances) instances.set(inst.id, inst);
    } else if (data.type === "updates") {
      for (const u of data.updates) apply(u);
    }
    scheduleDraw();
    attempt = 0;
  };
  ws.onclose = () => {
    const wait = Math.min(10000, 500 * 2 ** attempt);
    setConn("dashboard server lost; retrying", "bad");
    setTimeout(() => connect(attempt + 1), wait * Math.random() + 250);
  };
}

function setConn(text, cls) {
  const el = document.getElementById("conn");
  el.textContent = text;
  el.className = "badge " + cls;
  el.dataset.state = cls === "ok" ? "live" : "lost";
}

// ---------------------------------------------------------------- applying updates

function addPoint(list, point, replace) {
  if (replace && list.length) list[list.length - 1] = point;
  else list.push(point);
  if (list.length > 900) list.shift();
}

function apply(u) {
  const inst = instances.get(u.instance);
  if (!inst) return;
  switch (u.type) {
    case "link": inst.link = u.link; break;
    case "status":
      inst.status = u.status;
      inst.receipt = u.receipt;
      for (const s of u.status.strategies || []) inst.strategies[s.name] = s;
      break;
    case "strategy": inst.strategies[u.strategy.name] = u.strategy; break;
    case "equity": addPoint((inst.equity[u.strategy] ||= []), u.point, u.replace); break;
    case "price": addPoint((inst.prices[u.symbol] ||= []), u.point, u.replace); break;
    case "fill":
      inst.fills.push(u.fill);
      if (inst.fills.length > 200) inst.fills.shift();
      break;
    case "breaker": if (inst.status) inst.status.breaker = u.breaker; break;
    case "receipt": inst.receipt = u.receipt; break;
  }
}

// ---------------------------------------------------------------- drawing

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  setTimeout(() => { drawPending = false; draw(); }, 200); // at most five frames a second
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function equity(s) {
  const c = Number(s.capital), h = Number(s.holdings), p = Number(s.last_price);
  return isFinite(p) && s.last_price !== null ? c + h * p : c;
}

function fmt(n) {
  if (!isFinite(n)) return "–";
  return Math.abs(n) >= 100 ? n.toFixed(2) : Math.abs(n) >= 1 ? n.toFixed(4) : n.toPrecision(4);
}

// An exact decimal string without the trailing zeros of its exponent ("0.99850000" -> "0.9985"): text only.
function trimZeros(text) {
  if (typeof text !== "string" || !/^-?\d+\.\d+$/.test(text)) return text ?? "–";
  return text.replace(/0+$/, "").replace(/\.$/, "");
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago";
}

function draw() {
  const main = document.getElementById("instances");
  if (!instances.size) { main.innerHTML = '<p class="empty">no instance configured</p>'; return; }
  main.innerHTML = [...instances.values()].map(instanceHtml).join("");
}

function instanceHtml(inst) {
  const st = inst.status || {};
  const b = st.breaker || {};
  const linkOk = inst.link.state === "connected";
  const strategies = Object.values(inst.strategies);
  return `<section class="instance" data-instance="${esc(inst.id)}" data-link="${esc(inst.link.state)}">
    <h2>${esc(st.operation || inst.socket)} <small>${esc(st.mode || "")} · ${esc(st.phase || "")} · pid ${esc(st.pid || "–")}</small>
      <span class="badge ${linkOk ? "ok" : "bad"}">${linkOk ? "socket connected" : esc(inst.link.state)}</span>
      <span class="badge ${b.state === "closed" ? "ok" : "bad"}" data-breaker="${esc(b.state || "")}">breaker ${esc(b.state || "?")}${b.reason ? ": " + esc(b.reason) : ""}</span>
    </h2>
    ${linkOk ? "" : `<div class="lost">control socket ${esc(inst.socket)} lost: ${esc(inst.link.error)}${inst.link.retry_in_s != null ? `; re-dialling in ${esc(inst.link.retry_in_s)} s` : ""} (showing the last known state)</div>`}
    <div class="dim">${esc(st.summary || "")}</div>
    ${receiptHtml(inst.receipt)}
    ${strategiesHtml(strategies)}
    <div class="charts">${strategies.map((s) => chartsHtml(inst, s)).join("")}</div>
    <div class="tables">${ordersHtml(strategies)}${fillsHtml(inst.fills)}</div>
  </section>`;
}

function receiptHtml(r) {
  if (!r) return '<div class="receipt">no reconciliation yet</div>';
  const c = r.compared || {};
  const corrections = (r.corrections || []).length;
  return `<div class="receipt" data-receipt="${esc(r.venue_sha256 || "")}">last reconciliation: ${esc(r.trigger)}, ${esc(ago(r.at_ms))};
    compared ${esc(c.strategies)} strategies, ${esc(c.open_orders)} open orders, ${esc(c.trades)} trades, ${esc(c.balances)} balances;
    ${corrections} correction(s); view ${r.consistent ? "consistent" : "moved while read"}; sha256 ${esc(String(r.venue_sha256 || "").slice(0, 12))}…</div>`;
}

function strategiesHtml(strategies) {
  const rows = strategies.map((s) => `<tr data-strategy="${esc(s.name)}">
      <td>${esc(s.name)}</td><td>${esc(s.strategy)}</td><td>${esc(s.symbol)}</td>
      <td class="num">${esc(s.last_price ?? "–")}</td>
      <td class="num capital">${esc(s.capital)} ${esc(s.quote)}</td>
      <td class="num holdings">${esc(s.holdings)} ${esc(s.base)}</td>
      <td class="num equity">${esc(fmt(equity(s)))} ${esc(s.quote)}</td>
      <td class="num pnl">${esc(trimZeros(s.realized_pnl))}</td>
      <td class="num">${esc((s.open_orders || []).length)}</td>
      <td>${s.halted ? '<span class="badge bad">halted</span>' : s.trading ? "trading" : "not trading"}</td></tr>`);
  return `<table class="strategies"><thead><tr><th>strategy</th><th>class</th><th>symbol</th><th class="num">price</th>
    <th class="num">capital</th><th class="num">holdings</th><th class="num">equity</th><th class="num">realized PnL</th>
    <th class="num">open</th><th></th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function ordersHtml(strategies) {
  const rows = strategies.flatMap((s) => (s.open_orders || []).map((o) => `<tr>
      <td>${esc(s.name)}</td><td class="${esc(o.side)}">${esc(o.side)}</td><td>${esc(o.type)}</td>
      <td class="num">${esc(o.amount)}</td><td class="num">${esc(o.price ?? "market")}</td>
      <td class="num">${esc(o.filled)}</td><td>${esc(o.state)}</td><td class="dim">${esc(o.client_order_id)}</td></tr>`));
  return `<div><h3>open orders</h3><table class="orders"><thead><tr><th>strategy</th><th>side</th><th>type</th>
    <th class="num">amount</th><th class="num">price</th><th class="num">filled</th><th>state</th><th>client id</th></tr></thead>
    <tbody>${rows.join("") || '<tr><td colspan="8" class="dim">none</td></tr>'}</tbody></table></div>`;
}

function fillsHtml(fills) {
  const rows = fills.slice(-FILLS_SHOWN).reverse().map((f) => `<tr data-trade-id="${esc(f.trade_id)}">
      <td>${esc(new Date(f.timestamp_ms).toLocaleTimeString())}</td><td>${esc(f.strategy || "")}</td><td>${esc(f.symbol)}</td>
      <td class="${esc(f.side)}">${esc(f.side)}</td><td class="num">${esc(f.amount)}</td><td class="num">${esc(f.price)}</td>
      <td class="num">${esc(f.fee)} ${esc(f.fee_asset)}</td></tr>`);
  return `<div><h3>recent fills <span class="dim" data-fill-count="${fills.length}">(${fills.length})</span></h3>
    <table class="fills"><thead><tr><th>time</th><th>strategy</th><th>symbol</th><th>side</th><th class="num">amount</th>
    <th class="num">price</th><th class="num">fee</th></tr></thead><tbody>${rows.join("") || '<tr><td colspan="7" class="dim">none yet</td></tr>'}</tbody></table></div>`;
}

// ---------------------------------------------------------------- charts (plain SVG)

const W = 480, H = 150, PAD = 60;

function scaler(lo, hi, a, b) {
  const span = hi - lo || Math.abs(hi) * 0.001 || 1;
  return (v) => a + ((v - lo) / span) * (b - a);
}

function polyline(points, x, y, cls) {
  if (points.length < 1) return "";
  const d = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  return `<polyline class="${cls}" points="${d}"/>`;
}

function axes(lo, hi, top, bottom, label) {
  return `<line class="grid" x1="${PAD}" x2="${W}" y1="${top}" y2="${top}"/><line class="grid" x1="${PAD}" x2="${W}" y1="${bottom}" y2="${bottom}"/>
    <text x="2" y="${top + 9}">${esc(fmt(hi))}</text><text x="2" y="${bottom}">${esc(fmt(lo))}</text>
    <text x="${W - 4}" y="${top + 10}" text-anchor="end">${esc(label)}</text>`;
}

function span(t0, t1) {
  const s = Math.round((t1 - t0) / 1000);
  return `<text x="${PAD}" y="${H - 2}">${s < 120 ? s + " s" : Math.round(s / 60) + " min"} ago</text><text x="${W - 4}" y="${H - 2}" text-anchor="end">now</text>`;
}

function chartsHtml(inst, s) {
  const eq = (inst.equity[s.name] || []).map((p) => [p[0], Number(p[1]), Number(p[2])]);
  const px = (inst.prices[s.symbol] || []).map((p) => [p[0], Number(p[1])]);
  return `<figure data-chart="equity" data-strategy="${esc(s.name)}"><figcaption>${esc(s.name)}: equity (blue) and realized PnL (amber), ${esc(s.quote)}</figcaption>${equityChart(eq)}</figure>
    <figure data-chart="price" data-strategy="${esc(s.name)}"><figcaption>${esc(s.symbol)}: price, open orders (dashed), fills (dots)</figcaption>${priceChart(px, s, inst.fills)}</figure>`;
}

function timeRange(...lists) {
  const ts = lists.flat().map((p) => p[0]);
  return ts.length ? [Math.min(...ts), Math.max(...ts, Math.min(...ts) + 1000)] : [Date.now() - 60000, Date.now()];
}

function equityChart(points) {
  if (!points.length) return `<svg viewBox="0 0 ${W} ${H}"><text x="${PAD}" y="20">no data yet</text></svg>`;
  const [t0, t1] = timeRange(points);
  const x = scaler(t0, t1, PAD, W - 2);
  const e = points.map((p) => [p[0], p[1]]), q = points.map((p) => [p[0], p[2]]);
  const [elo, ehi] = [Math.min(...e.map((p) => p[1])), Math.max(...e.map((p) => p[1]))];
  const [qlo, qhi] = [Math.min(...q.map((p) => p[1])), Math.max(...q.map((p) => p[1]))];
  const mid = H / 2;
  return `<svg viewBox="0 0 ${W} ${H}">${axes(elo, ehi, 4, mid - 4, "equity")}${axes(qlo, qhi, mid + 4, H - 14, "realized PnL")}
    ${polyline(e, x, scaler(elo, ehi, mid - 4, 4), "equity")}${polyline(q, x, scaler(qlo, qhi, H - 14, mid + 4), "pnl")}${span(t0, t1)}</svg>`;
}

function priceChart(points, s, fills) {
  const mine = fills.filter((f) => f.symbol === s.symbol && (!f.strategy || f.strategy === s.name));
  const fp = mine.map((f) => [f.timestamp_ms, Number(f.price), f.side]);
  if (!points.length && !fp.length) return `<svg viewBox="0 0 ${W} ${H}"><text x="${PAD}" y="20">no prices yet</text></svg>`;
  const [t0, t1] = timeRange(points, fp);
  const inWindow = fp.filter((p) => p[0] >= t0);
  const orders = (s.open_orders || []).filter((o) => o.price !== null).map((o) => [Number(o.price), o.side]);
  const values = [...points.map((p) => p[1]), ...inWindow.map((p) => p[1]), ...orders.map((o) => o[0])];
  const lo = Math.min(...values), hi = Math.max(...values);
  const x = scaler(t0, t1, PAD, W - 2), y = scaler(lo, hi, H - 14, 4);
  const lines = orders.map(([p, side]) => `<line class="order-${esc(side)}" x1="${PAD}" x2="${W}" y1="${y(p).toFixed(1)}" y2="${y(p).toFixed(1)}"/>`);
  const dots = inWindow.map(([t, p, side]) => `<circle class="fill-${esc(side)}" r="3" cx="${x(t).toFixed(1)}" cy="${y(p).toFixed(1)}"/>`);
  return `<svg viewBox="0 0 ${W} ${H}">${axes(lo, hi, 4, H - 14, "price")}${lines.join("")}${polyline(points, x, y, "price")}${dots.join("")}${span(t0, t1)}</svg>`;
}

connect(0);
