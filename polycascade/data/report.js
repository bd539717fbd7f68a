// Draws the polycascade report from the data embedded in the page (report --html) or fetched from the
// dashboard. Charts are Plotly figures described by the server; this script only places them.
"use strict";
(() => {
  const root = document.getElementById("app");
  const live = document.body.dataset.live;
  const KEY = "polycascade-key";
  let data = JSON.parse(document.getElementById("polycascade-data").textContent);
  let query = "";

  const h = (tag, props = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  };
  const locale = () => (data && data.lang === "ja" ? "ja-JP" : "en-US");
  // Amounts are recorded in USD; a yen policy's page shows them in yen at its rate (data.fx), rounded to
  // whole yen from ¥1 up. Small amounts keep their digits: a sub-cent call is not shown as zero.
  const yen = (n) => new Intl.NumberFormat(locale(), {style: "currency", currency: "JPY",
    maximumFractionDigits: n !== 0 && Math.abs(n) < 1 ? 4 : 0}).format(n);
  const money = (usd, fx = data && data.fx) => {
    const n = Number(usd);
    if (fx) return yen(n * Number(fx.jpy_per_usd));
    const digits = n !== 0 && Math.abs(n) < 0.01 ? 6 : 2;
    return new Intl.NumberFormat(locale(), {style: "currency", currency: "USD", minimumFractionDigits: 2,
                                            maximumFractionDigits: digits}).format(n);
  };
  const RATIOS = new Set(["share", "cap", "used", "pass_rate", "escalation_rate", "accuracy", "cost_vs_best_single"]);
  const cell = (column, value, t) => {
    if (value === null || value === undefined) return "—";
    if (column.endsWith("_usd")) return money(value);
    if (column.endsWith("_jpy")) return yen(Number(value));
    if (RATIOS.has(column)) return (100 * value).toFixed(1) + "%";
    if (typeof value === "boolean") return value ? t.yes : t.no;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  };

  function table(spec, t, onRow) {
    if (!spec || !spec.rows.length) return h("p", {class: "empty"}, t.empty);
    const head = h("tr", {}, spec.labels.map((label) => h("th", {}, label)));
    const body = spec.rows.map((row, i) => {
      const tr = h("tr", {}, row.map((v, j) => h("td", {class: spec.columns[j]}, cell(spec.columns[j], v, t))));
      if (onRow) onRow(tr, i);
      return tr;
    });
    return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
  }

  function headline(d) {
    const shown = (f) => (f.form === "usd" ? money(f.value) : f.form === "count" ? Number(f.value).toLocaleString(locale()) : f.value);
    const facts = d.facts.map((f) => h("div", {class: "fact"}, h("span", {}, f.label),
      h("strong", f.id ? {id: f.id, ...(f.form === "usd" ? {"data-usd": f.value} : {})} : {}, shown(f))));
    return h("header", {}, h("h1", {}, d.title), h("p", {class: "scope"}, d.subtitle), h("div", {class: "facts"}, facts));
  }

  function section(s, t) {
    return h("section", {id: s.id}, h("h2", {}, s.title),
      s.figure ? h("div", {class: "chart", id: `chart-${s.id}`}) : null,
      s.details ? h("div", {class: "details", id: `details-${s.id}`}, h("p", {class: "hint"}, s.details.hint)) : null,
      s.table ? table(s.table, t) : null);
  }

  // A click on a point whose customdata names one of the section's detail tables shows that table.
  function showDetails(s, t, key) {
    const detail = s.details.tables[key];
    if (!detail) return;
    document.getElementById(`details-${s.id}`).replaceChildren(h("h3", {}, detail.title), table(detail.table, t));
  }

  const CALL_COLUMNS = ["when", "call_id", "run_id", "task_id", "node", "model", "vendor", "data_class", "outcome", "cost_usd"];

  function callsSection(d) {
    const t = d.labels;
    const rows = d.calls.filter((c) => !query || c.search.toLowerCase().includes(query.toLowerCase()));
    const spec = {columns: CALL_COLUMNS, labels: CALL_COLUMNS.map((c) => t[c] || c),
                  rows: rows.map((c) => CALL_COLUMNS.map((k) => c[k]))};
    const found = table(spec, t, (tr, i) => {
      tr.dataset.callId = rows[i].call_id;
      tr.addEventListener("click", () => explain(rows[i], t));
    });
    const search = h("input", {type: "search", id: "search", placeholder: t.search, value: query});
    const box = h("div", {id: "calls-table"}, found);
    const count = h("span", {class: "count"}, `${rows.length} / ${d.calls.length} ${t.shown}`);
    search.addEventListener("input", () => {
      query = search.value;
      const again = callsSection(d);
      box.replaceWith(again.querySelector("#calls-table"));
      count.replaceWith(again.querySelector(".count"));
    });
    return h("section", {id: "calls"}, h("h2", {}, t.section_calls), h("div", {class: "bar"}, search, count), box);
  }

  function explain(c, t) {
    const d = c.decision;
    const fx = d && d.fx;  // the rate of the day the call was reserved
    const at = fx ? ` (${fx.jpy_per_usd} JPY/USD, ${fx.as_of}; $${c.cost_usd})` : "";
    const parts = [
      h("h2", {}, t.explanation),
      h("p", {}, `${c.call_id} · ${c.model} (${c.vendor}, ${c.jurisdiction}; ${c.host_jurisdiction}) · ${c.outcome} · ${money(c.cost_usd, fx)}${at} · ${c.data_class}`),
    ];
    if (d && d.cross_border) {
      const x = d.cross_border;
      const bases = Object.entries(x.basis).map(([country, basis]) => `${country}: ${basis}`).join(", ");
      parts.push(h("p", {class: "cross-border"}, `${t.cross_border}: ${x.from} → ${x.vendor_jurisdiction} / ${x.host_jurisdiction} · ${bases} · ${x.policy} ${x.policy_version}`));
    }
    if (c.verdict) parts.push(h("p", {class: "verdict"}, `${t.verdict}: ${c.verdict.passed ? t.yes : t.no} · ${c.verdict.score ?? "—"} · ${c.verdict.by}`));
    if (!d || !d.candidates) parts.push(h("p", {}, t.no_decision));
    else {
      parts.push(h("p", {class: "why"}, `${t.why}: ${d.reason ?? ""}`));
      parts.push(h("p", {class: "reservation"}, `${t.reservation}: ${d.reserved_usd !== undefined ? money(d.reserved_usd, fx) : "—"} · ${t.policy}: ${d.policy ?? "—"}`));
      const cands = d.candidates || [];
      const candCols = ["model", "vendor", "p_pass", "call_cost_usd", "expected_total_usd", "adequate"];
      parts.push(h("h3", {}, t.candidates), table({columns: candCols, labels: candCols.map((k) => t[k] || k),
        rows: cands.map((x) => candCols.map((k) => (k === "p_pass" ? Number(x[k]).toFixed(2) : x[k])))}, t,
        (tr, i) => { if (cands[i].model === d.chosen) tr.className = "chosen"; }));
      const rejected = Object.entries(d.rejected || {});
      const rejCols = ["model", "rule", "reason", "values"];
      parts.push(h("h3", {}, t.rejected), table({columns: rejCols, labels: rejCols.map((k) => t[k] || k),
        rows: rejected.map(([m, x]) => (typeof x === "object" ? [m, x.rule, x.reason, x.values] : [m, x, "", null]))}, t));
    }
    let dialog = document.getElementById("explanation");
    if (!dialog) { dialog = h("dialog", {id: "explanation"}); document.body.append(dialog); }
    dialog.replaceChildren(h("button", {class: "close", onclick: () => dialog.close()}, t.close), ...parts);
    dialog.showModal();
  }

  function draw(d) {
    document.documentElement.lang = d.lang;
    document.title = d.title;
    const parts = [headline(d), ...d.sections.map((s) => section(s, d.labels))];
    if (Array.isArray(d.calls)) parts.push(callsSection(d));
    root.replaceChildren(...parts);
    for (const s of d.sections) {
      if (!s.figure) continue;
      const chart = document.getElementById(`chart-${s.id}`);
      Plotly.newPlot(chart, s.figure.data, s.figure.layout, {displaylogo: false, responsive: true});
      if (s.details) chart.on("plotly_click", (e) => showDetails(s, d.labels, e.points[0].customdata));
    }
    if (live) root.prepend(h("p", {class: "refreshed"}, `${d.labels.refreshed} ${new Date().toLocaleTimeString(locale())}`));
  }

  function login(refused) {
    const t = data.labels;
    const input = h("input", {type: "password", id: "key", autocomplete: "off"});
    const form = h("form", {id: "login"}, h("label", {for: "key"}, t.key_prompt), input, h("button", {type: "submit"}, t.open),
      refused ? h("p", {class: "refused"}, t.key_refused) : null);
    form.addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem(KEY, input.value); refresh(); });
    root.replaceChildren(form);
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY);
    if (!key) return login(false);
    const answer = await fetch(live + window.location.search, {headers: {Authorization: `Bearer ${key}`}});
    if (answer.status === 401) { sessionStorage.removeItem(KEY); return login(true); }
    data = await answer.json();
    draw(data);
  }

  const every = 1000 * Number(document.body.dataset.refresh || 15);
  if (live) { refresh(); setInterval(() => { if (sessionStorage.getItem(KEY)) refresh(); }, every); }
  else draw(data);
})();
