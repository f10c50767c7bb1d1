/* trajlab viewer: a small interactive line chart on <canvas>, no dependencies.
 *
 *   new LineChart(container, {title, series: [{name, points: [[x, y], ...]}], onClick(x, series)})
 *
 * Hover shows a crosshair and every visible series' value at the nearest x; clicking
 * the legend hides or shows a series; dragging across the plot zooms into that x
 * range and a double click resets it; a plain click calls onClick with the nearest x
 * (the viewer uses it to browse that step's trajectories).
 */
(function () {
  "use strict";
  const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24",
    "#6e7781", "#bf3989", "#0550ae", "#116329", "#953800"];
  const M = { l: 54, r: 12, t: 8, b: 24 };

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }

  function ticks(lo, hi, n) {
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  class LineChart {
    constructor(el, opts) {
      this.opts = opts;
      this.series = opts.series.map((s, i) => ({ ...s, color: s.color || PALETTE[i % PALETTE.length], hidden: false }));
      this.zoom = null;
      this.root = document.createElement("div");
      this.root.className = "chart";
      if (opts.id) this.root.dataset.chart = opts.id;
      const title = document.createElement("div");
      title.className = "chart-title";
      title.textContent = opts.title;
      this.canvas = document.createElement("canvas");
      this.canvas.height = opts.height || 200;
      this.tip = document.createElement("div");
      this.tip.className = "chart-tip";
      this.tip.hidden = true;
      this.legend = document.createElement("div");
      this.legend.className = "chart-legend";
      this.root.append(title, this.canvas, this.tip, this.legend);
      el.appendChild(this.root);
      this.buildLegend();
      this.bind();
      this.draw();
      this._onResize = () => this.draw();
      window.addEventListener("resize", this._onResize);
    }

    buildLegend() {
      this.legend.textContent = "";
      this.series.forEach((s) => {
        const item = document.createElement("span");
        const sw = document.createElement("i");
        sw.style.background = s.color;
        item.append(sw, document.createTextNode(s.name));
        item.title = "click to hide or show";
        item.onclick = () => { s.hidden = !s.hidden; item.classList.toggle("off", s.hidden); this.draw(); };
        this.legend.appendChild(item);
      });
    }

    visible() { return this.series.filter((s) => !s.hidden); }

    extent() {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const s of this.visible()) for (const [x, y] of s.points) {
        if (this.zoom && (x < this.zoom[0] || x > this.zoom[1])) continue;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      if (!Number.isFinite(x0)) return null;
      if (this.zoom) { x0 = this.zoom[0]; x1 = this.zoom[1]; }
      if (x0 === x1) { x0 -= 1; x1 += 1; }
      const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
      return { x0, x1, y0: y0 - pad, y1: y1 + pad };
    }

    draw(hoverX) {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = Math.max(200, this.root.clientWidth - 16), h = this.opts.height || 200;
      c.style.width = w + "px"; c.style.height = h + "px";
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const e = this.extent();
      this.geom = null;
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = "#656d76";
      if (!e) { g.fillText("no data", w / 2 - 20, h / 2); return; }
      const pw = w - M.l - M.r, ph = h - M.t - M.b;
      const X = (x) => M.l + ((x - e.x0) / (e.x1 - e.x0)) * pw;
      const Y = (y) => M.t + (1 - (y - e.y0) / (e.y1 - e.y0)) * ph;
      this.geom = { X, e, pw, w, h };
      g.strokeStyle = "#eaeef2"; g.lineWidth = 1;
      g.textAlign = "right"; g.textBaseline = "middle";
      for (const t of ticks(e.y0, e.y1, 4)) {
        const y = Math.round(Y(t)) + 0.5;
        g.beginPath(); g.moveTo(M.l, y); g.lineTo(w - M.r, y); g.stroke();
        g.fillText(fmt(t), M.l - 5, y);
      }
      g.textAlign = "center"; g.textBaseline = "top";
      for (const t of ticks(e.x0, e.x1, Math.max(2, Math.floor(pw / 70)))) {
        g.fillText(fmt(t), X(t), h - M.b + 5);
      }
      g.strokeStyle = "#d0d7de";
      g.strokeRect(M.l + 0.5, M.t + 0.5, pw, ph);
      g.save();
      g.beginPath(); g.rect(M.l, M.t, pw, ph); g.clip();
      for (const s of this.visible()) {
        g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 1.6;
        g.beginPath();
        s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
        g.stroke();
        if (s.points.length < 40) for (const [x, y] of s.points) { g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 7); g.fill(); }
      }
      if (this.drag && this.drag.x1 !== undefined) {
        g.fillStyle = "rgba(9,105,218,.12)";
        g.fillRect(Math.min(this.drag.x0, this.drag.x1), M.t, Math.abs(this.drag.x1 - this.drag.x0), ph);
      }
      if (hoverX !== undefined) {
        g.strokeStyle = "rgba(31,35,40,.5)"; g.lineWidth = 1;
        g.beginPath(); g.moveTo(X(hoverX) + 0.5, M.t); g.lineTo(X(hoverX) + 0.5, M.t + ph); g.stroke();
      }
      g.restore();
    }

    nearestX(px) {
      if (!this.geom) return undefined;
      let best, bd = Infinity;
      for (const s of this.visible()) for (const [x] of s.points) {
        const d = Math.abs(this.geom.X(x) - px);
        if (d < bd) { bd = d; best = x; }
      }
      return best;
    }

    bind() {
      const c = this.canvas;
      const pos = (ev) => ev.clientX - c.getBoundingClientRect().left;
      c.addEventListener("mousedown", (ev) => { this.drag = { x0: pos(ev) }; });
      c.addEventListener("mousemove", (ev) => {
        const px = pos(ev);
        if (this.drag) this.drag.x1 = px;
        const x = this.nearestX(px);
        this.draw(x);
        if (x === undefined) { this.tip.hidden = true; return; }
        const lines = [`${this.opts.xLabel || "step"} ${fmt(x)}`];
        for (const s of this.visible()) {
          const p = s.points.find((q) => q[0] === x);
          if (p) lines.push(`${s.name}: ${fmt(p[1])}`);
        }
        this.tip.textContent = lines.join("\n");
        this.tip.hidden = false;
        const left = Math.min(this.geom.X(x) + 14, this.geom.w - this.tip.offsetWidth - 4);
        this.tip.style.left = Math.max(0, left) + "px";
        this.tip.style.top = "26px";
      });
      c.addEventListener("mouseleave", () => { this.tip.hidden = true; this.drag = null; this.draw(); });
      c.addEventListener("mouseup", (ev) => {
        const d = this.drag; this.drag = null;
        const px = pos(ev);
        if (d && Math.abs(px - d.x0) > 6 && this.geom) {
          const inv = (p) => this.geom.e.x0 + ((p - M.l) / this.geom.pw) * (this.geom.e.x1 - this.geom.e.x0);
          this.zoom = [inv(Math.min(d.x0, px)), inv(Math.max(d.x0, px))];
          this.draw();
          return;
        }
        const x = this.nearestX(px);
        if (x !== undefined && this.opts.onClick) {
          const s = this.visible().find((q) => q.points.some((p) => p[0] === x));
          this.opts.onClick(x, s);
        }
      });
      c.addEventListener("dblclick", () => { this.zoom = null; this.draw(); });
    }
  }

  window.LineChart = LineChart;
  window.fmtNum = fmt;
})();
