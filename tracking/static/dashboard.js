/* quantloop dashboard: plain JS, inline SVG charts, no external assets.
 *
 * Live mode (served by tracking.api): fetches /api/quantization/{history,performance,points,facets}
 * with the chosen filters, re-renders on "Refresh" and every 60 s.
 * Static mode (tracking.report): window.QUANTLOOP_STATIC holds the same four bodies inline.
 */
"use strict";
(function () {
  // Quality bands on score, best first (same as tracking.analytics.QUALITY_BANDS).
  const BANDS = [["excellent", 0.9], ["good", 0.8], ["fair", 0.6], ["poor", -Infinity]];
  const COLORS = {
    excellent: "#2e9e44", good: "#d4b106", fair: "#e8780c", poor: "#d23a2f", unscored: "#8c8c8c",
  };
  const FILTERS = ["model_name", "quant_format", "method", "sweep_id", "status"];
  const PAGE = 20;
  const REFRESH_MS = 60000;
  const SVGNS = "http://www.w3.org/2000/svg";

  const state = {
    offset: 0, total: 0, filters: {}, timer: null, loading: false, refreshCount: 0,
    data: window.QUANTLOOP_STATIC || null,
  };
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting helpers
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function band(score) {
    if (!isNum(score)) return "unscored";
    for (const [name, lo] of BANDS) if (score >= lo) return name;
    return "poor";
  }
  function fixed(v, digits) { return isNum(v) ? v.toFixed(digits) : "\u2014"; }
  function percent(v, digits) { return isNum(v) ? (100 * v).toFixed(digits) + "%" : "\u2014"; }
  function when(ts) {
    if (!ts) return "\u2014";
    const d = new Date(ts);
    return isNaN(d) ? String(ts) : d.toISOString().slice(0, 19).replace("T", " ");
  }
  function el(tag, props, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function setValue(id, text, raw) {
    const node = $(id);
    node.textContent = text;
    node.dataset.value = raw === null || raw === undefined ? "" : String(raw);
  }

  // ---------------------------------------------------------------- cards and distribution
  function renderCards(summary, perf) {
    setValue("card-total-loops", String(summary.total_loops), summary.total_loops);
    setValue("card-success-rate", percent(summary.success_rate, 1), summary.success_rate);
    setValue("card-avg-score", fixed(summary.avg_score, 3), summary.avg_score);
    $("card-avg-score").className = "value label-" + band(summary.avg_score);
    setValue("card-avg-top1", isNum(summary.avg_top1_agreement)
      ? summary.avg_top1_agreement.toFixed(1) + "%" : "\u2014", summary.avg_top1_agreement);
    setValue("card-avg-size", isNum(summary.avg_size_mb)
      ? summary.avg_size_mb.toFixed(2) + " MB" : "\u2014", summary.avg_size_mb);
    setValue("card-avg-bpw", fixed(summary.avg_bits_per_weight, 2), summary.avg_bits_per_weight);
    const t = perf.trend_analysis;
    const arrow = { improving: "\u2197 ", declining: "\u2198 ", stable: "\u2192 " }[t.trend_direction] || "";
    const node = $("card-trend");
    setValue("card-trend", arrow + t.trend_direction.replace("_", " "), t.trend_direction);
    node.className = "value trend-" + t.trend_direction;
    $("card-trend-hint").textContent = isNum(t.percent_change)
      ? (t.percent_change >= 0 ? "+" : "") + t.percent_change.toFixed(1) +
        "% newer vs older half of last " + t.window
      : "needs \u2265 2 scored jobs";
  }

  function renderDistribution(dist) {
    const bar = $("dist-bar"), legend = $("dist-legend");
    bar.replaceChildren(); legend.replaceChildren();
    const total = Object.values(dist).reduce((a, b) => a + b, 0);
    for (const name of ["excellent", "good", "fair", "poor", "unscored"]) {
      const n = dist[name] || 0;
      if (n > 0 && total > 0) {
        const seg = el("div", { style: `width:${(100 * n) / total}%;background:${COLORS[name]}`,
          title: `${name}: ${n}` });
        bar.appendChild(seg);
      }
      const item = el("span", { id: "dist-" + name, "data-count": String(n) });
      item.appendChild(el("span", { class: "sw", style: "background:" + COLORS[name] }));
      item.appendChild(document.createTextNode(`${name} ${n}`));
      legend.appendChild(item);
    }
  }

  // ---------------------------------------------------------------- charts (inline SVG)
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Number(v.toFixed(10)));
    }
    return ticks;
  }

  function frame(svg, xDomain, yDomain, xLabel, yLabel, xTicks) {
    svg.replaceChildren();
    const W = 560, H = 320, m = { l: 52, r: 16, t: 12, b: 42 };
    const sx = (v) => m.l + ((v - xDomain[0]) / (xDomain[1] - xDomain[0] || 1)) * (W - m.l - m.r);
    const sy = (v) => H - m.b - ((v - yDomain[0]) / (yDomain[1] - yDomain[0] || 1)) * (H - m.t - m.b);
    for (const v of niceTicks(yDomain[0], yDomain[1], 5)) {
      svg.appendChild(svgEl("line", { class: "grid", x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v) }));
      svg.appendChild(svgEl("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }, String(v)));
    }
    for (const v of xTicks || niceTicks(xDomain[0], xDomain[1], 6)) {
      svg.appendChild(svgEl("line", { class: "axis", x1: sx(v), x2: sx(v), y1: H - m.b, y2: H - m.b + 4 }));
      svg.appendChild(svgEl("text", { x: sx(v), y: H - m.b + 16, "text-anchor": "middle" }, String(v)));
    }
    svg.appendChild(svgEl("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    svg.appendChild(svgEl("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    svg.appendChild(svgEl("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, xLabel));
    svg.appendChild(svgEl("text", { x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` }, yLabel));
    return { sx, sy };
  }

  function emptyChart(svg, message) {
    svg.replaceChildren(svgEl("text", { class: "empty", x: 280, y: 160, "text-anchor": "middle" }, message));
  }

  function scoreDomain(scores) {
    const lo = Math.min(...scores);
    return [Math.max(0, Math.floor((lo - 0.02) * 10) / 10), 1];
  }

  function pad(lo, hi) {
    const span = hi - lo || Math.abs(hi) || 1;
    return [Math.max(0, lo - 0.06 * span), hi + 0.06 * span];
  }

  function tip(p) {
    return `${p.model_name} ${p.quant_format} (${p.method})\nscore ${fixed(p.score, 4)} · ` +
      `${fixed(p.size_mb, 2)} MB · ${fixed(p.bits_per_weight, 2)} bpw\n${when(p.timestamp)}  ${p.id}`;
  }

  function renderPareto(points) {
    const svg = $("chart-pareto");
    const pts = points.filter((p) => isNum(p.score) && isNum(p.size_mb));
    svg.dataset.points = String(pts.length);
    svg.dataset.front = String(pts.filter((p) => p.on_pareto_front).length);
    if (!pts.length) return emptyChart(svg, "no scored jobs yet");
    const xs = pts.map((p) => p.size_mb);
    const { sx, sy } = frame(svg, pad(Math.min(...xs), Math.max(...xs)),
      scoreDomain(pts.map((p) => p.score)), "size (MB)", "score");
    const front = pts.filter((p) => p.on_pareto_front).sort((a, b) => a.size_mb - b.size_mb);
    if (front.length > 1) {
      let d = `M${sx(front[0].size_mb)},${sy(front[0].score)}`;
      for (let i = 1; i < front.length; i++) {
        d += ` H${sx(front[i].size_mb)} V${sy(front[i].score)}`;
      }
      svg.appendChild(svgEl("path", { class: "front", d }));
    }
    for (const p of pts) {
      const c = svgEl("circle", {
        cx: sx(p.size_mb), cy: sy(p.score), r: p.on_pareto_front ? 6.5 : 4.5,
        fill: COLORS[band(p.score)], "fill-opacity": p.on_pareto_front ? 1 : 0.75,
        stroke: p.on_pareto_front ? "#1d232b" : "#ffffff", "stroke-width": p.on_pareto_front ? 2 : 1,
        "data-id": p.id, class: p.on_pareto_front ? "pt on-front" : "pt",
      });
      c.appendChild(svgEl("title", {}, (p.on_pareto_front ? "Pareto front\n" : "") + tip(p)));
      svg.appendChild(c);
    }
  }

  function renderTrend(points) {
    const svg = $("chart-trend");
    const pts = points.filter((p) => isNum(p.score));
    svg.dataset.points = String(pts.length);
    if (!pts.length) return emptyChart(svg, "no scored jobs yet");
    const n = pts.length;
    const xTicks = niceTicks(1, Math.max(n, 2), 6).filter((v) => Number.isInteger(v) && v <= n);
    const { sx, sy } = frame(svg, [n > 1 ? 1 : 0, Math.max(n, 2)],
      scoreDomain(pts.map((p) => p.score)), "job # (oldest \u2192 newest)", "score", xTicks);
    svg.appendChild(svgEl("polyline", { class: "series",
      points: pts.map((p, i) => `${sx(i + 1)},${sy(p.score)}`).join(" ") }));
    const k = 5, mean = [];
    for (let i = 0; i < n; i++) {
      const w = pts.slice(Math.max(0, i - k + 1), i + 1);
      mean.push(w.reduce((a, p) => a + p.score, 0) / w.length);
    }
    if (n > 1) {
      svg.appendChild(svgEl("polyline", { class: "mean",
        points: mean.map((v, i) => `${sx(i + 1)},${sy(v)}`).join(" ") }));
    }
    pts.forEach((p, i) => {
      const c = svgEl("circle", { cx: sx(i + 1), cy: sy(p.score), r: 4, fill: COLORS[band(p.score)],
        stroke: "#fff", "stroke-width": 1, class: "pt", "data-id": p.id });
      c.appendChild(svgEl("title", {}, tip(p)));
      svg.appendChild(c);
    });
  }

  // ---------------------------------------------------------------- tables
  function renderCompare(table, groups, label) {
    table.replaceChildren();
    const head = el("tr");
    for (const h of [label, "loops", "success", "avg score", "best", "avg MB", "avg bpw", "avg PPL", "avg KLD"]) {
      head.appendChild(el("th", {}, h));
    }
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody"));
    for (const [name, g] of Object.entries(groups)) {
      const a = g.averages;
      const tr = el("tr", { "data-name": name });
      tr.appendChild(el("td", {}, name));
      tr.appendChild(el("td", { class: "num" }, String(g.total_loops)));
      tr.appendChild(el("td", { class: "num" }, percent(g.success_rate, 0)));
      tr.appendChild(el("td", { class: "num band band-" + band(a.score) }, fixed(a.score, 3)));
      tr.appendChild(el("td", { class: "num" }, fixed(g.best_score, 3)));
      tr.appendChild(el("td", { class: "num" }, fixed(a.size_mb, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(a.bits_per_weight, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(a.perplexity, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(a.kld_mean, 4)));
      body.appendChild(tr);
    }
  }

  function renderHistory(rows, total, offset) {
    const body = $("history-body");
    body.replaceChildren();
    for (const r of rows) {
      const ok = r.status === "ok";
      const score = ok ? r.score : null;
      const b = band(score);
      const m = r.metrics || {};
      const tr = el("tr", { "data-id": r.id, "data-band": b, class: ok ? "" : "failed" });
      tr.appendChild(el("td", { class: "mono", title: r.id }, String(r.id).slice(0, 8)));
      tr.appendChild(el("td", { class: "mono" }, when(r.timestamp)));
      tr.appendChild(el("td", {}, r.model_name));
      tr.appendChild(el("td", {}, r.quant_format));
      tr.appendChild(el("td", {}, r.method));
      tr.appendChild(el("td", { class: "num band band-" + b, "data-score": isNum(score) ? String(score) : "" },
        fixed(score, 3)));
      tr.appendChild(el("td", { class: "label-" + b }, b));
      tr.appendChild(el("td", { class: "num" }, fixed(m.top1_agreement, 1)));
      tr.appendChild(el("td", { class: "num" }, fixed(m.perplexity, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(m.kld_mean, 4)));
      tr.appendChild(el("td", { class: "num" }, fixed(r.size_mb, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(r.bits_per_weight, 2)));
      tr.appendChild(el("td", { class: "num" }, fixed(r.duration_seconds, 1)));
      tr.appendChild(el("td", { class: r.passed_threshold ? "pass yes" : "pass no",
        title: r.passed_threshold ? "passed thresholds" : "failed thresholds" },
        r.passed_threshold ? "\u2714 pass" : "\u2718 fail"));
      tr.appendChild(el("td", { title: (r.errors || []).join("\n") }, r.status));
      body.appendChild(tr);
    }
    $("history-range").textContent = total
      ? `${offset + 1}\u2013${offset + rows.length} of ${total}, newest first` : "no jobs recorded";
    $("prev-page").disabled = offset <= 0;
    $("next-page").disabled = offset + rows.length >= total;
  }

  function renderAll(d) {
    renderCards(d.history.summary, d.performance);
    renderDistribution(d.performance.quality_distribution);
    renderPareto(d.points.points);
    renderTrend(d.points.points);
    renderCompare($("by-format"), d.performance.by_format, "format");
    renderCompare($("by-model"), d.performance.by_model, "model");
    renderHistory(d.history.history, d.history.total_results, d.history.offset || 0);
  }

  // ---------------------------------------------------------------- live mode
  function query(extra) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  async function getJSON(url) {
    const res = await fetch(url, { cache: "no-store" });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${url}: ${res.status} ${body.detail || res.statusText}`);
    return body;
  }

  function renderFacets(facets) {
    for (const sel of document.querySelectorAll("select[data-filter]")) {
      const key = sel.dataset.filter;
      const values = new Set(key === "status" ? ["ok", "failed"] : facets[key] || []);
      if (state.filters[key]) values.add(state.filters[key]);
      sel.replaceChildren(el("option", { value: "" }, "all"));
      for (const v of [...values].sort()) sel.appendChild(el("option", { value: v }, v));
      sel.value = state.filters[key] || "";
    }
  }

  async function refresh() {
    if (state.loading) return;
    state.loading = true;
    $("refresh-btn").disabled = true;
    try {
      const [history, performance, points, facets] = await Promise.all([
        getJSON("/api/quantization/history" + query({ limit: PAGE, offset: state.offset })),
        getJSON("/api/quantization/performance" + query()),
        getJSON("/api/quantization/points" + query()),
        getJSON("/api/quantization/facets"),
      ]);
      state.data = { history, performance, points };
      renderFacets(facets.facets);
      renderAll(state.data);
      $("error-banner").hidden = true;
      state.refreshCount += 1;
      document.body.dataset.refreshCount = String(state.refreshCount);
      $("status-line").textContent = (history.tracking_enabled ? "" : "no results store yet \u00b7 ") +
        "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (err) {
      const banner = $("error-banner");
      banner.textContent = "Could not load data: " + err.message;
      banner.hidden = false;
    } finally {
      state.loading = false;
      $("refresh-btn").disabled = false;
    }
  }

  function syncUrl() {
    history.replaceState(null, "", location.pathname + query());
    for (const fmt of ["csv", "json"]) {
      $("export-" + fmt).href = "/api/quantization/export" + query({ format: fmt });
    }
  }

  function setAuto(on) {
    clearInterval(state.timer);
    state.timer = on ? setInterval(refresh, REFRESH_MS) : null;
  }

  function initLive() {
    const params = new URLSearchParams(location.search);
    for (const k of FILTERS) if (params.get(k)) state.filters[k] = params.get(k);
    syncUrl();
    for (const sel of document.querySelectorAll("select[data-filter]")) {
      sel.addEventListener("change", () => {
        state.filters[sel.dataset.filter] = sel.value;
        state.offset = 0;
        syncUrl();
        refresh();
      });
    }
    $("clear-filters").addEventListener("click", () => {
      state.filters = {}; state.offset = 0; syncUrl(); refresh();
    });
    $("refresh-btn").addEventListener("click", refresh);
    $("prev-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); });
    $("next-page").addEventListener("click", () => { state.offset += PAGE; refresh(); });
    $("auto-refresh").addEventListener("change", (e) => setAuto(e.target.checked));
    setAuto(true);
    refresh();
  }

  function initStatic(d) {
    document.body.classList.add("static");
    if (d.title) { $("page-title").textContent = d.title; document.title = d.title; }
    $("status-line").textContent = d.subtitle || "";
    renderAll(d);
  }

  if (state.data) initStatic(state.data); else initLive();
})();
