/* trajlab viewer: single-page app over the JSON API of trajlab/viewer/server.py.
 *
 * Routes (location.hash):
 *   #/                                   runs: table, alarms, training curves, evaluation results
 *   #/browse/RUN?filters                 browse and filter a run's trajectories, paged
 *   #/traj/RUN/REF                       one trajectory: segments, tool calls, reward, token overlays
 *   #/compare/RUN_A/REF_A/RUN_B/REF_B    two trajectories side by side
 *   #/compare-runs/RUN_A/RUN_B           two runs: paired per-metric differences with intervals
 *
 * In an exported report (window.TRAJLAB_EXPORT) the same code answers API calls from
 * the inlined data and filters the included trajectories in the page.
 * Model output is untrusted text: it is only ever inserted with textContent.
 */
(function () {
  "use strict";
  const EXPORT = window.TRAJLAB_EXPORT || null;
  const app = document.getElementById("app");
  const fmt = window.fmtNum;
  let routeToken = 0;
  let runsCache = null;

  // ---------------------------------------------------------------- helpers
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const badge = (text, cls) => h("span", { class: `badge ${cls || text}` }, text);
  const kv = (k, v) => h("span", { class: "kv" }, h("b", {}, k), v);
  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: Object.fromEntries(new URLSearchParams(query || "")) };
  }
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
    const s = p.toString();
    return s ? "?" + s : "";
  }

  // ---------------------------------------------------------------- data access
  async function api(path, params) {
    params = params || {};
    if (EXPORT) return exportApi(path, params);
    const r = await fetch(path + qs(params));
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  function exportApi(path, params) {
    const m = path.match(/^\/api\/runs\/([^/]+)\/(trajectories|trajectory)$/);
    if (m && m[2] === "trajectories") return exportPage(m[1], params);
    const key = m ? `${path}?ref=${params.ref}` : path;
    if (!(key in EXPORT.api)) throw new Error("this trajectory is not included in the exported report; open the run with `trajlab view` to see it");
    return EXPORT.api[key];
  }
  function exportPage(rid, p) {
    const rows = (EXPORT.rows[rid] || []).filter((r) => {
      if (p.step !== undefined && p.step !== "" && r.step !== Number(p.step)) return false;
      if (p.example && !r.example_id.includes(p.example)) return false;
      if (p.example_id && r.example_id !== p.example_id) return false;
      if (p.sample !== undefined && p.sample !== "" && r.sample_index !== Number(p.sample)) return false;
      if (p.correct && r.correct !== (p.correct === "true")) return false;
      if (p.stop && (r.stop_reason || "") !== p.stop) return false;
      if (p.tool_errors && (r.tool_errors > 0) !== (p.tool_errors === "true")) return false;
      if (p.has_tools && (r.tool_calls > 0) !== (p.has_tools === "true")) return false;
      if (p.reward_min !== undefined && p.reward_min !== "" && !(r.reward !== null && r.reward >= Number(p.reward_min))) return false;
      if (p.reward_max !== undefined && p.reward_max !== "" && !(r.reward !== null && r.reward <= Number(p.reward_max))) return false;
      if (p.filtered && (r.filtered || "none") !== p.filtered) return false;
      if (p.q && !r._text.includes(p.q.toLowerCase())) return false;
      return true;
    });
    if (p.sort) {
      const key = p.sort.endsWith("reward") ? "reward" : "response_tokens", sign = p.sort.startsWith("-") ? -1 : 1;
      rows.sort((a, b) => sign * ((a[key] ?? -Infinity) - (b[key] ?? -Infinity)));
    }
    const offset = Number(p.offset || 0), limit = Number(p.limit || 50);
    return { total: rows.length, offset, limit, rows: rows.slice(offset, offset + limit), index: { complete: true, indexed_rows: (EXPORT.rows[rid] || []).length }, export_total: EXPORT.totals[rid] };
  }
  async function runs() {
    if (!runsCache) runsCache = (await api("/api/runs")).runs;
    return runsCache;
  }
  const runById = async (rid) => (await runs()).find((r) => r.id === rid);

  // ---------------------------------------------------------------- router
  async function route() {
    const token = ++routeToken;
    const { parts, params } = parseHash();
    document.getElementById("tooltip").hidden = true;
    app.textContent = "";
    try {
      if (parts[0] === "browse") await browsePage(parts[1], params, token);
      else if (parts[0] === "traj") await trajPage(parts[1], parts[2]);
      else if (parts[0] === "compare") await comparePage(parts[1], parts[2], parts[3], parts[4]);
      else if (parts[0] === "compare-runs") await compareRunsPage(parts[1], parts[2]);
      else { runsCache = null; await runsPage(); }
    } catch (err) {
      app.append(h("div", { class: "errorbox" }, String(err.message || err)));
    }
    app.dataset.ready = String(token);
  }
  window.addEventListener("hashchange", route);

  // ---------------------------------------------------------------- runs page
  const GROUPS = [
    ["Evaluation", (k) => /^eval\//.test(k)],
    ["Reward components (mean)", (k) => /^reward(\/.+)?\/mean$/.test(k) || k === "reward"],
    ["Reward components (std)", (k) => /^reward(\/.+)?\/std$/.test(k)],
    ["Accuracy and pass rates", (k) => /(^|\/)(accuracy|pass_rate|pass@|maj@)/.test(k)],
    ["Tool calls", (k) => /tool/.test(k)],
    ["Response length", (k) => /length/.test(k) && !/^filtered|^stop_reason/.test(k)],
    ["Entropy", (k) => /entropy/.test(k)],
    ["KL", (k) => /(^|\/|_)kl($|\/|_)/.test(k)],
    ["Filtered fractions", (k) => /^filtered\//.test(k)],
    ["Stop reasons", (k) => /^stop_reason/.test(k)],
    ["Tokens per second", (k) => /tokens_per_s|throughput/.test(k)],
    ["Time per phase (s)", (k) => /^time\//.test(k)],
    ["Optimisation", (k) => /clip|grad_norm|loss|(^|\/)lr$|learning_rate/.test(k)],
  ];
  function groupOf(key) {
    for (const [name, test] of GROUPS) if (test(key)) return name;
    return "Other";
  }

  async function runsPage() {
    const all = await runs();
    app.append(h("h1", {}, "Runs"));
    const charted = new Set(all.filter((r) => r.kind === "train" && !r.parent).map((r) => r.id));
    const table = h("table", { class: "grid", id: "runs-table" },
      h("tr", {}, ["", "Run", "Kind", "Status", "Updated", "Headline metrics", "Alarms", "Trajectories", "Config"].map((t) => h("th", {}, t))));
    for (const r of all) {
      const cfgRow = h("tr", { hidden: true }, h("td", { colspan: 9 }, h("pre", {}, r.config ? (typeof r.config === "string" ? r.config : JSON.stringify(r.config, null, 2)) : "(no config file)"), r.command ? h("div", { class: "muted" }, "command: " + r.command.join(" ")) : null));
      const check = r.kind === "train" ? h("input", { type: "checkbox", title: "show in charts", checked: charted.has(r.id), onchange: (ev) => { ev.target.checked ? charted.add(r.id) : charted.delete(r.id); drawCharts(); } }) : "";
      table.append(
        h("tr", { dataset: { run: r.id } },
          h("td", {}, check),
          h("td", { title: r.path }, r.parent ? "\u2514 " : "", r.name),
          h("td", {}, r.kind + (r.step !== null && r.step !== undefined ? ` @ step ${r.step}` : "")),
          h("td", {}, badge(r.status)),
          h("td", { class: "muted" }, (r.updated || "").replace("T", " ")),
          h("td", {}, Object.entries(r.headline).map(([k, v]) => h("span", { class: "chip" }, `${k} ${fmt(v)}`))),
          h("td", {}, r.alarms.length ? badge(String(r.alarms.length), r.alarms.some((a) => a.severity === "critical") ? "critical" : "warning") : h("span", { class: "noalarm" }, "none")),
          h("td", {}, r.n_files ? h("a", { href: `#/browse/${r.id}` }, "browse") : h("span", { class: "muted" }, "none")),
          h("td", {}, h("button", { onclick: () => { cfgRow.hidden = !cfgRow.hidden; } }, r.config_file || "show"))),
        cfgRow);
    }
    app.append(table);

    app.append(h("h2", {}, "Alarms"));
    const alarmBox = h("div", { id: "alarms" });
    const alarms = all.flatMap((r) => r.alarms.map((a) => ({ ...a, run: r })));
    if (!alarms.length) alarmBox.append(h("p", { class: "noalarm" }, "No alarms: none of the rules in docs/viewer.md fired on these runs."));
    for (const a of alarms) {
      alarmBox.append(h("div", { class: `alarm ${a.severity}`, dataset: { alarm: a.name, run: a.run.id } },
        badge(a.severity), " ", h("b", {}, a.name), ` \u00b7 ${a.run.name}`, a.step !== null ? ` \u00b7 step ${a.step} ` : " ",
        a.step !== null && a.run.kind === "train" ? h("a", { href: `#/browse/${a.run.id}?step=${a.step}` }, "(browse this step)") : null,
        h("div", {}, a.message)));
    }
    app.append(alarmBox);

    const chartsHead = h("h2", {}, "Training curves");
    const chartsBox = h("div", { class: "charts", id: "charts" });
    const hint = h("p", { class: "chart-hint" }, "Hover for values; click a point to browse that step's trajectories; drag to zoom, double-click to reset; click a legend entry to hide it.");
    if (all.some((r) => r.kind === "train")) app.append(chartsHead, hint, chartsBox);
    const metrics = {};
    async function drawCharts() {
      chartsBox.textContent = "";
      const ids = [...charted];
      for (const id of ids) if (!metrics[id]) metrics[id] = await api(`/api/runs/${id}/metrics`);
      const groups = new Map();
      for (const id of ids) {
        const run = all.find((r) => r.id === id), m = metrics[id];
        const keys = new Set();
        for (const row of m.rows) for (const [k, v] of Object.entries(row)) if (typeof v === "number" && k !== "step" && k !== "time") keys.add(k);
        const addSeries = (key, points) => {
          const g = groupOf(key);
          if (!groups.has(g)) groups.set(g, []);
          groups.get(g).push({ name: ids.length > 1 ? `${run.name}: ${key}` : key, points, run: id });
        };
        for (const key of [...keys].sort()) {
          addSeries(key, m.rows.filter((row) => typeof row[key] === "number").map((row, i) => [typeof row.step === "number" ? row.step : i, row[key]]));
        }
        if (![...keys].some((k) => k.startsWith("eval/"))) {
          const ekeys = new Set(m.eval_children.flatMap((c) => Object.keys(c.metrics)));
          for (const key of [...ekeys].filter((k) => /accuracy|pass@|maj@|tool_call_rate|reward/.test(k)).sort()) {
            addSeries(`eval/${key}`, m.eval_children.filter((c) => typeof c.metrics[key] === "number").map((c) => [c.step, c.metrics[key]]));
          }
        }
      }
      const order = [...GROUPS.map((g) => g[0]).slice(1), "Evaluation", "Other"];
      for (const name of order) {
        if (!groups.has(name)) continue;
        new window.LineChart(chartsBox, {
          title: name, id: name, series: groups.get(name),
          onClick: (x, s) => { if (s) location.hash = `#/browse/${s.run}?step=${x}`; },
        });
      }
      if (!ids.length) chartsBox.append(h("p", { class: "muted" }, "Tick a training run above to chart it."));
    }
    await drawCharts();

    const evals = all.filter((r) => r.kind === "eval");
    if (evals.length) {
      app.append(h("h2", {}, "Evaluation results"));
      const keys = [...new Set(evals.flatMap((r) => Object.keys(r.headline)))];
      const t = h("table", { class: "grid", id: "eval-table" }, h("tr", {}, h("th", {}, "Run"), keys.map((k) => h("th", { class: "num" }, k))));
      for (const r of evals) t.append(h("tr", {}, h("td", {}, h("a", { href: `#/browse/${r.id}` }, r.name)), keys.map((k) => h("td", { class: "num" }, fmt(r.headline[k])))));
      app.append(t);
    }
    const comparable = all.filter((r) => r.kind === "eval" || (r.kind === "train" && r.children && r.children.length));
    if (comparable.length >= 2 && !EXPORT) {
      const pick = (name, i) => h("select", { name }, comparable.map((r, k) => h("option", { value: r.id, selected: k === i }, r.parent ? `${r.name} (${r.parent})` : r.name)));
      const a = pick("a", 0), b = pick("b", 1);
      app.append(h("h2", {}, "Compare two runs"),
        h("div", { class: "controls", id: "compare-runs-picker" }, "A ", a, " B ", b,
          h("button", { class: "primary", onclick: () => { location.hash = `#/compare-runs/${a.value}/${b.value}`; } }, "Compare B with A"),
          h("span", { class: "muted" }, " paired over the examples both evaluated; a training run means its newest evaluation")));
    }
  }

  // ---------------------------------------------------------------- compare two runs
  async function compareRunsPage(ra, rb) {
    const c = await api("/api/compare", { a: ra, b: rb });
    app.append(h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Runs"), " \u203a compare runs"));
    app.append(h("h1", {}, `${c.b_name} vs ${c.a_name}`));
    app.append(h("p", { class: "muted" }, `A: ${c.a_name}`, h("br", {}), `B: ${c.b_name}`, h("br", {}),
      `${c.shared} shared examples (only in A: ${c.only_a}, only in B: ${c.only_b}); ${Math.round(c.level * 100)} % paired bootstrap interval of B \u2212 A over ${c.n_boot} resamples of the shared examples.`));
    const t = h("table", { class: "grid", id: "compare-runs" },
      h("tr", {}, ["metric", "A", "B", "B \u2212 A", "interval", "verdict"].map((x) => h("th", {}, x))));
    for (const m of c.metrics) {
      const verdict = m.within_noise ? badge("within noise", "warning") : badge(m.diff > 0 ? "B higher" : "B lower", "done");
      t.append(h("tr", { dataset: { metric: m.metric } },
        h("td", {}, m.metric), h("td", { class: "num" }, fmt(m.a)), h("td", { class: "num" }, fmt(m.b)),
        h("td", { class: "num" }, (m.diff >= 0 ? "+" : "") + m.diff.toFixed(3)),
        h("td", { class: "num" }, `[${m.ci[0].toFixed(3)}, ${m.ci[1].toFixed(3)}]`), h("td", {}, verdict)));
    }
    app.append(t);
  }

  // ---------------------------------------------------------------- browse page
  const FILTERS = ["step", "example", "correct", "stop", "tool_errors", "reward_min", "reward_max", "filtered", "q", "sort"];
  async function browsePage(rid, params, token) {
    const run = await runById(rid);
    if (!run) throw new Error(`no run ${rid}`);
    const facets = await api(`/api/runs/${rid}/facets`);
    app.append(h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Runs"), " \u203a ", run.name));
    app.append(h("h1", {}, `Trajectories of ${run.name}`));
    const sel = (name, label, options) => h("label", {}, label, h("select", { name }, options.map(([v, t]) => h("option", { value: v, selected: (params[name] || "") === v }, t))));
    const inp = (name, label, type, extra) => h("label", {}, label, h("input", { name, type, value: params[name] || "", ...(extra || {}) }));
    const form = h("form", { class: "filters", id: "filters" },
      facets.steps.length ? sel("step", "step", [["", "any"], ...facets.steps.map((s) => [String(s), String(s)])]) : null,
      inp("example", "example id contains", "text", { size: 12 }),
      sel("correct", "correct", [["", "any"], ["true", "yes"], ["false", "no"]]),
      sel("stop", "stop reason", [["", "any"], ...Object.keys(facets.stop_reasons).filter((s) => s).map((s) => [s, `${s} (${facets.stop_reasons[s]})`])]),
      sel("tool_errors", "tool errors", [["", "any"], ["true", "has errors"], ["false", "no errors"]]),
      inp("reward_min", "reward \u2265", "number", { step: "any" }),
      inp("reward_max", "reward \u2264", "number", { step: "any" }),
      Object.keys(facets.filtered).some((f) => f) ? sel("filtered", "filtered", [["", "any"], ["none", "not filtered"], ...Object.keys(facets.filtered).filter((f) => f).map((f) => [f, f])]) : null,
      inp("q", "text search", "search", { size: 18, placeholder: "in outputs and tool calls" }),
      sel("sort", "sort", [["", "file order"], ["-reward", "reward \u2193"], ["reward", "reward \u2191"], ["-tokens", "length \u2193"], ["tokens", "length \u2191"]]),
      h("button", { class: "primary", type: "submit" }, "Apply"),
      h("button", { type: "button", onclick: () => { location.hash = `#/browse/${rid}`; } }, "Clear"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = {};
      for (const f of FILTERS) if (form.elements[f] && form.elements[f].value !== "") p[f] = form.elements[f].value;
      location.hash = `#/browse/${rid}${qs(p)}`;
    });
    app.append(form);
    const status = h("div", { class: "pager", id: "pager" });
    const tableBox = h("div", {});
    app.append(status, tableBox);
    const limit = 50;
    const offset = Number(params.offset || 0);
    const query = { limit, offset };
    for (const f of FILTERS) if (params[f]) query[f] = params[f];
    async function load() {
      const page = await api(`/api/runs/${rid}/trajectories`, query);
      if (token !== routeToken) return;
      status.textContent = "";
      const go = (o) => { location.hash = `#/browse/${rid}${qs({ ...params, offset: o || "" })}`; };
      status.append(
        h("button", { disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, "\u2190 prev"),
        h("span", { id: "page-info" }, page.total ? `${offset + 1}\u2013${Math.min(offset + limit, page.total)} of ${page.total.toLocaleString()}` : "no trajectories match"),
        h("button", { disabled: offset + limit >= page.total, onclick: () => go(offset + limit) }, "next \u2192"));
      if (page.export_total !== undefined) status.append(h("span", { class: "progress" }, `(exported report: ${page.index.indexed_rows} of ${page.export_total.toLocaleString()} trajectories included)`));
      if (page.index.complete && facets.index && !facets.index.complete) { route(); return; } // refresh the filter choices
      if (!page.index.complete) {
        const pct = page.index.total_bytes ? Math.floor((100 * page.index.indexed_bytes) / page.index.total_bytes) : 0;
        status.append(h("span", { class: "progress", id: "indexing" }, `indexing ${pct}% (${page.index.indexed_rows.toLocaleString()} trajectories so far; counts cover the indexed part)`));
        setTimeout(() => { if (token === routeToken) load(); }, 1000);
      }
      tableBox.textContent = "";
      const t = h("table", { class: "grid", id: "browse-table" },
        h("tr", {}, ["step", "example", "sample", "reward", "correct", "stop", "tool calls", "tool errors", "tokens", "filtered", "prediction"].map((c) => h("th", { class: /reward|tool|tokens|sample/.test(c) ? "num" : "" }, c))));
      for (const r of page.rows) {
        t.append(h("tr", { class: "clickable", dataset: { ref: r.ref }, onclick: () => { location.hash = `#/traj/${rid}/${r.ref}`; } },
          h("td", {}, r.step ?? "\u2013"), h("td", {}, r.example_id), h("td", { class: "num" }, r.sample_index),
          h("td", { class: "num" }, fmt(r.reward)),
          h("td", {}, r.correct === true ? "\u2713" : r.correct === false ? "\u2717" : "\u2013"),
          h("td", {}, r.stop_reason ? badge(r.stop_reason) : "\u2013"),
          h("td", { class: "num" }, r.tool_calls), h("td", { class: "num" }, r.tool_errors || ""),
          h("td", { class: "num" }, `${r.response_tokens} / ${r.tokens}`),
          h("td", {}, r.filtered || ""), h("td", {}, r.prediction)));
      }
      tableBox.append(t);
    }
    await load();
  }

  // ---------------------------------------------------------------- trajectory rendering
  const OVERLAYS = {
    none: { label: "none" },
    mask: { label: "loss mask", legend: "green: trained on (loss_mask 1); plain: not trained" },
    logprob: { label: "sampling logprob", legend: "red: low sampling logprob (darkest at \u2264 \u22125)" },
    trainer_logprob: { label: "trainer logprob", legend: "red: low trainer logprob (darkest at \u2264 \u22125)" },
    gap: { label: "trainer \u2212 sampling logprob", legend: "blue: trainer higher, orange: trainer lower (scaled to the largest gap)" },
    advantage: { label: "advantage", legend: "green: positive advantage, red: negative (scaled to the largest |advantage|)" },
    entropy: { label: "entropy", legend: "purple: high entropy (scaled to the largest entropy)" },
  };

  function tokenTable(payload) {
    const t = payload.trajectory;
    const toks = [];
    let promptLen = 0, inPrompt = true;
    t.segments.forEach((s, si) => {
      if (inPrompt && s.source === "prompt") promptLen += s.token_ids.length; else inPrompt = false;
      s.token_ids.forEach((id, j) => toks.push({ i: toks.length, seg: si, source: s.source, id, mask: s.loss_mask ? s.loss_mask[j] : defaultMask(s), logprob: s.logprobs ? s.logprobs[j] : null }));
    });
    const train = (t.metadata || {}).train || null;
    const nResp = toks.length - promptLen;
    const warnings = [];
    for (const [key, field] of [["trainer_logprobs", "trainer_logprob"], ["advantages", "advantage"], ["entropy", "entropy"]]) {
      const arr = train && train[key];
      if (!Array.isArray(arr)) continue;
      if (arr.length !== nResp) { warnings.push(`metadata.train.${key} has ${arr.length} values for ${nResp} response tokens; not shown`); continue; }
      arr.forEach((v, j) => { toks[promptLen + j][field] = v; });
    }
    for (const tk of toks) if (tk.trainer_logprob !== undefined && tk.logprob !== null) tk.gap = tk.trainer_logprob - tk.logprob;
    if (payload.pieces) toks.forEach((tk) => { tk.piece = payload.pieces[tk.i]; });
    return { toks, promptLen, train, warnings };
  }

  function overlayStyle(kind, tk, scale) {
    const v = kind === "mask" ? tk.mask : tk[kind];
    if (v === undefined || v === null) return "";
    const a = (x) => Math.max(0, Math.min(1, x)).toFixed(3);
    switch (kind) {
      case "mask": return v ? "background: rgba(46,160,67,.35)" : "";
      case "logprob": case "trainer_logprob": return `background: rgba(207,34,46,${a(-v / 5 * 0.75)})`;
      case "advantage": return v >= 0 ? `background: rgba(46,160,67,${a(v / scale * 0.7)})` : `background: rgba(207,34,46,${a(-v / scale * 0.7)})`;
      case "gap": return v >= 0 ? `background: rgba(9,105,218,${a(v / scale * 0.7)})` : `background: rgba(225,111,36,${a(-v / scale * 0.7)})`;
      case "entropy": return `background: rgba(130,80,223,${a(v / scale * 0.7)})`;
      default: return "";
    }
  }

  function showTip(ev, tk) {
    const tip = document.getElementById("tooltip");
    const f = (v) => (v === undefined || v === null ? "\u2013" : fmt(v));
    tip.textContent = [
      `token ${tk.i}  id ${tk.id}  (${tk.source})`,
      tk.piece !== undefined ? `text ${JSON.stringify(tk.piece)}` : "text: no tokenizer, id only",
      `loss mask ${tk.mask}`, `sampling logprob ${f(tk.logprob)}`, `trainer logprob ${f(tk.trainer_logprob)}`,
      `advantage ${f(tk.advantage)}`, `entropy ${f(tk.entropy)}`,
    ].join("\n");
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = ev.clientY + 14 + "px";
  }

  // A segment stored without loss_mask has its source's default: model tokens 1, others 0.
  function defaultMask(s) {
    return s.source === "model" ? 1 : 0;
  }

  // The example's reference answer (metadata.reference: a string, or a list of accepted ones).
  function referenceText(ref) {
    if (ref === undefined || ref === null || (Array.isArray(ref) && !ref.length)) return "\u2013";
    return Array.isArray(ref) ? ref.join(" | ") : String(ref);
  }

  function renderTrajectory(box, payload, run, side) {
    const t = payload.trajectory;
    const tt = tokenTable(payload);
    const r = t.reward;
    box.append(h("div", { class: "traj-head" },
      kv("example", t.example_id), kv("sample", t.sample_index), t.group_id ? kv("group", t.group_id) : null,
      tt.train && tt.train.step !== undefined ? kv("step", tt.train.step) : null,
      kv("stop", t.stop_reason ? badge(t.stop_reason) : "\u2013"),
      kv("reward", r ? fmt(r.total) : "\u2013"), kv("prediction", t.prediction ?? "\u2013"),
      kv("reference", referenceText(t.metadata && t.metadata.reference)),
      kv("tokens", `${tt.toks.length} (${tt.toks.length - tt.promptLen} response)`),
      tt.train && tt.train.filtered ? kv("filtered", badge(tt.train.filtered, "warning")) : null));
    if (r && Object.keys(r.components || {}).length) {
      box.append(h("table", { class: "grid reward", style: "width:auto" },
        h("tr", {}, h("th", {}, "reward component"), h("th", { class: "num" }, "value")),
        Object.entries(r.components).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, fmt(v)))),
        h("tr", {}, h("td", {}, h("b", {}, "total")), h("td", { class: "num" }, h("b", {}, fmt(r.total))))));
    }
    // overlay controls
    const have = new Set(["none", "mask"]);
    for (const tk of tt.toks) for (const k of ["logprob", "trainer_logprob", "advantage", "entropy", "gap"]) if (tk[k] !== undefined && tk[k] !== null) have.add(k);
    const modeSel = h("select", { class: "mode" }, h("option", { value: "text" }, "segment text"), h("option", { value: "tokens" }, "tokens"));
    const ovSel = h("select", { class: "overlay" }, Object.entries(OVERLAYS).filter(([k]) => have.has(k)).map(([k, o]) => h("option", { value: k }, o.label)));
    const legend = h("span", { class: "legend-scale" });
    box.append(h("div", { class: "controls" }, h("label", {}, "show ", modeSel), h("label", {}, "token overlay ", ovSel), legend,
      h("span", { class: "legend-scale" }, payload.pieces ? `tokens decoded with ${payload.tokenizer}` : "no tokenizer for this run: tokens show their ids (pass --tokenizer DIR to decode)")));
    for (const w of tt.warnings) box.append(h("div", { class: "warnbox" }, w));
    const segBox = h("div", { class: "segments" });
    box.append(segBox);
    const scaleOf = (k) => Math.max(1e-9, ...tt.toks.map((tk) => Math.abs(tk[k] ?? 0)));
    function drawSegments() {
      segBox.textContent = "";
      const ov = ovSel.value;
      if (ov !== "none") modeSel.value = "tokens";
      legend.textContent = OVERLAYS[ov].legend || "";
      const scale = ["advantage", "gap", "entropy"].includes(ov) ? scaleOf(ov) : 1;
      let k = 0;
      t.segments.forEach((s, si) => {
        const seg = h("div", { class: `seg seg-${s.source}`, dataset: { seg: si, source: s.source } },
          h("div", { class: "seg-head" }, `${s.source} \u00b7 ${s.token_ids.length} tokens${s.source === "model" ? ` \u00b7 ${s.loss_mask ? s.loss_mask.reduce((a, b) => a + b, 0) : s.token_ids.length} trained` : ""}`));
        if (modeSel.value === "text") {
          seg.append(h("div", { class: "seg-text" }, s.text || "(no text stored)"));
          k += s.token_ids.length;
        } else {
          const line = h("div", { class: "tokens" });
          for (let j = 0; j < s.token_ids.length; j++, k++) {
            const tk = tt.toks[k];
            const el = h("span", { class: `tok m${tk.mask}${tk.piece === undefined ? " id" : ""}`, dataset: { i: tk.i, mask: tk.mask } }, tk.piece !== undefined ? tk.piece : `#${tk.id}`);
            const st = overlayStyle(ov, tk, scale);
            if (st) el.setAttribute("style", st);
            el.addEventListener("mousemove", (ev) => showTip(ev, tk));
            el.addEventListener("mouseleave", () => { document.getElementById("tooltip").hidden = true; });
            line.append(el);
          }
          seg.append(line);
        }
        segBox.append(seg);
      });
    }
    modeSel.onchange = () => { if (modeSel.value === "text") ovSel.value = "none"; drawSegments(); };
    ovSel.onchange = drawSegments;
    drawSegments();

    box.append(h("h3", {}, `Tool calls (${t.tool_calls.length})`));
    if (!t.tool_calls.length) box.append(h("p", { class: "muted" }, "no tool calls"));
    t.tool_calls.forEach((c, i) => {
      const args = c.args && Object.keys(c.args).length === 1 && typeof c.args.code === "string" ? c.args.code : JSON.stringify(c.args, null, 2);
      box.append(h("div", { class: `toolcall${c.ok ? "" : " failed"}`, dataset: { call: i } },
        h("div", {}, h("b", {}, `#${i + 1} ${c.tool}`), " ", badge(c.status || (c.ok ? "ok" : "error"), c.ok ? "ok" : "bad"),
          ` \u00b7 turn ${c.turn} \u00b7 ${fmt(c.latency_s)} s`),
        h("div", { class: "muted" }, "arguments"), h("pre", { class: "args" }, args),
        h("div", { class: "muted" }, "result"), h("pre", { class: "result" }, c.result || "(empty)"),
        c.error ? h("div", { class: "err" }, `error: ${c.error}`) : null));
    });
    const meta = { ...(t.metadata || {}) };
    if (meta.train) meta.train = Object.fromEntries(Object.entries(meta.train).map(([k, v]) => [k, Array.isArray(v) ? `[${v.length} values]` : v]));
    box.append(h("details", {}, h("summary", {}, "metadata"), h("pre", {}, JSON.stringify(meta, null, 2))));
    return tt;
  }

  // ---------------------------------------------------------------- trajectory page
  async function comparePicker(rid, payload, otherSide) {
    const all = (await runs()).filter((r) => r.n_files);
    const t = payload.trajectory;
    const runSel = h("select", { name: "run" }, all.map((r) => h("option", { value: r.id, selected: r.id === (otherSide ? otherSide.rid : rid) }, r.name)));
    const stepSel = h("select", { name: "step" });
    const msg = h("span", { class: "muted" });
    async function fillSteps() {
      stepSel.textContent = "";
      const f = await api(`/api/runs/${runSel.value}/facets`);
      stepSel.append(h("option", { value: "" }, "any step"), ...f.steps.map((s) => h("option", { value: String(s) }, `step ${s}`)));
      stepSel.hidden = !f.steps.length;
    }
    runSel.onchange = fillSteps;
    await fillSteps();
    async function find() {
      const base = { example_id: t.example_id, limit: 50 };
      if (stepSel.value) base.step = stepSel.value;
      const page = await api(`/api/runs/${runSel.value}/trajectories`, base);
      const here = `${rid}|${payload.ref}`;
      const rows = page.rows.filter((r) => `${runSel.value}|${r.ref}` !== here);
      const pick = rows.find((r) => r.sample_index === t.sample_index) || rows[0];
      if (!pick) { msg.textContent = `example ${t.example_id} is not in that run${stepSel.value ? " at that step" : ""}`; return; }
      location.hash = `#/compare/${rid}/${payload.ref}/${runSel.value}/${pick.ref}`;
    }
    return h("div", { class: "controls", id: "compare-picker" }, h("b", {}, "Compare this example with "), runSel, stepSel,
      h("button", { class: "primary", onclick: find }, "Compare"), msg);
  }

  async function trajPage(rid, ref) {
    const run = await runById(rid);
    if (!run) throw new Error(`no run ${rid}`);
    const payload = await api(`/api/runs/${rid}/trajectory`, { ref });
    app.append(h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Runs"), " \u203a ", h("a", { href: `#/browse/${rid}` }, run.name), " \u203a ", `trajectory ${ref}`));
    app.append(h("h1", {}, `${payload.trajectory.example_id} \u00b7 sample ${payload.trajectory.sample_index}`));
    app.append(await comparePicker(rid, payload));
    const box = h("div", { id: "trajectory" });
    app.append(box);
    renderTrajectory(box, payload, run, "single");
  }

  async function comparePage(ra, refa, rb, refb) {
    const [A, B] = await Promise.all([api(`/api/runs/${ra}/trajectory`, { ref: refa }), api(`/api/runs/${rb}/trajectory`, { ref: refb })]);
    const [runA, runB] = [await runById(ra), await runById(rb)];
    app.append(h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Runs"), " \u203a compare"));
    app.append(h("h1", {}, `Compare ${A.trajectory.example_id}`));
    app.append(await comparePicker(ra, A, { rid: rb }));
    const label = (run, p) => {
      const st = ((p.trajectory.metadata || {}).train || {}).step;
      return h("div", { class: "side-label" }, h("a", { href: `#/traj/${run.id}/${p.ref}` }, run.name), st !== undefined ? ` \u00b7 step ${st}` : "", ` \u00b7 sample ${p.trajectory.sample_index}`);
    };
    const left = h("div", { id: "compare-a" }, label(runA, A)), right = h("div", { id: "compare-b" }, label(runB, B));
    app.append(h("div", { class: "cols2", id: "compare" }, left, right));
    renderTrajectory(left, A, runA, "a");
    renderTrajectory(right, B, runB, "b");
  }

  if (EXPORT) document.getElementById("export-note").textContent = `exported report (${EXPORT.generated}): ${EXPORT.note}`;
  route();
})();
