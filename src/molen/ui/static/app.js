// molen ui: one page application over /api/molen/v1/ui (see molen/ui/api.py).
// Preact + htm (no build step), ECharts for charts, Tabulator for the runs table.
import { html, render, useState, useEffect, useRef, useMemo } from "./vendor/preact-htm.js";

const API = "../api/molen/v1/ui";

// -- plumbing -------------------------------------------------------------------------------------

function token() { return localStorage.getItem("molen.token") || ""; }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers["Authorization"] = `Bearer ${token()}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(API + path, { ...options, headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const text = await answer.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (_) { data = { message: text }; }
  if (!answer.ok) throw new Error(data.message || data.detail || `HTTP ${answer.status}`);
  return data;
}

function useApi(path, deps) {
  const [state, setState] = useState({ data: null, error: null });
  useEffect(() => {
    let live = true;
    setState({ data: null, error: null });
    if (path) api(path).then((data) => live && setState({ data, error: null }),
                          (error) => live && setState({ data: null, error: error.message }));
    return () => { live = false; };
  }, deps || [path]);
  return state;
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || "") };
}

function go(path) { location.hash = "#/" + path; }

function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}
function fmtDuration(ms) {
  if (ms == null) return "";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtNumber(v) {
  if (typeof v !== "number") return v == null ? "" : String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : String(+v.toPrecision(6));
}
const short = (id) => (id || "").slice(0, 8);
const Status = ({ s }) => html`<span class="badge ${s}">${s}</span>`;
const Err = ({ e }) => (e ? html`<div class="error" role="alert">${e}</div>` : null);
const Loading = () => html`<p class="loading">loading…</p>`;

function smooth(values, weight) {
  // exponential moving average with bias correction (as TensorBoard draws it)
  if (!weight) return values;
  let last = 0, n = 0;
  return values.map((v) => {
    if (!Number.isFinite(v)) return v;
    last = last * weight + (1 - weight) * v; n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

// -- charts ---------------------------------------------------------------------------------------

// Each library loads with the first page that needs it: Tabulator (450 KB) with the runs
// table, ECharts (1 MB) with the first chart (a run or compare page asks for it at once, while
// its data is on the way).
const loading = {};
function loadScript(src, global) {
  if (window[global]) return Promise.resolve(window[global]);
  loading[src] ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(window[global]);
    script.onerror = () => reject(new Error(`${src} could not be loaded`));
    document.head.appendChild(script);
  });
  return loading[src];
}
const loadEcharts = () => loadScript("static/vendor/echarts.min.js", "echarts");
const loadTabulator = () => loadScript("static/vendor/tabulator.min.js", "Tabulator");

function Chart({ option, tall, label }) {
  const ref = useRef(null);
  const chart = useRef(null);
  const [ready, setReady] = useState(false);
  useEffect(() => {
    let live = true;
    let resize = null;
    // drawn when it scrolls into view: a run with 24 charts paints the first ones at once
    const seen = new IntersectionObserver((entries) => {
      if (!entries.some((e) => e.isIntersecting)) return;
      seen.disconnect();
      loadEcharts().then((echarts) => {
        if (!live) return;
        chart.current = echarts.init(ref.current, null, { renderer: "canvas" });
        resize = () => chart.current && chart.current.resize();
        window.addEventListener("resize", resize);
        setReady(true);
      });
    }, { rootMargin: "200px" });
    seen.observe(ref.current);
    return () => {
      live = false;
      seen.disconnect();
      if (resize) window.removeEventListener("resize", resize);
      if (chart.current) chart.current.dispose();
    };
  }, []);
  useEffect(() => { if (ready && chart.current) chart.current.setOption(option, true); }, [option, ready]);
  return html`<div class="chart ${tall ? "tall" : ""}" ref=${ref} aria-label=${label || "chart"} data-chart=${label || ""}></div>`;
}

function curveOption(title, lines, { log, weight }) {
  return {
    animation: false,
    title: { text: title, textStyle: { fontSize: 13 }, left: 8, top: 4 },
    tooltip: { trigger: "axis", valueFormatter: fmtNumber },
    legend: { top: 4, right: 8, type: "scroll", width: "55%" },
    grid: { left: 56, right: 20, top: 36, bottom: 56 },
    xAxis: { type: "value", name: "step", nameLocation: "middle", nameGap: 24, scale: true },
    yAxis: { type: log ? "log" : "value", scale: true },
    dataZoom: [{ type: "inside" }, { type: "slider", height: 16, bottom: 6 }],
    series: lines.map(({ name, points }) => {
      const ys = smooth(points.map((p) => (typeof p[1] === "number" ? p[1] : NaN)), weight);
      return { name, type: "line", showSymbol: points.length < 40, sampling: "lttb",
               data: points.map((p, i) => [p[0], ys[i]]) };
    }),
  };
}

function CurveControls({ log, setLog, weight, setWeight }) {
  return html`<label><input type="checkbox" checked=${log} onChange=${(e) => setLog(e.target.checked)} /> log scale</label>
    <label class="muted">smoothing <input type="range" min="0" max="0.99" step="0.01" value=${weight}
      onInput=${(e) => setWeight(+e.target.value)} /> ${weight.toFixed(2)}</label>`;
}

// -- runs table -----------------------------------------------------------------------------------

function RunsPage({ query }) {
  const experiments = useApi("/experiments");
  const experiment = query.get("experiment") || "";
  const [filter, setFilter] = useState(query.get("filter") || "");
  const [applied, setApplied] = useState(query.get("filter") || "");
  const [error, setError] = useState(null);
  const [total, setTotal] = useState(null);
  const [selected, setSelected] = useState([]);
  const columns = useApi("/columns", []);
  const [tabulator, setTabulator] = useState(!!window.Tabulator);
  useEffect(() => { loadTabulator().then(() => setTabulator(true), (e) => setError(e.message)); }, []);
  const [shown, setShown] = useState(() => JSON.parse(localStorage.getItem("molen.columns") || "null"));
  const [chooser, setChooser] = useState(false);
  const holder = useRef(null);
  const table = useRef(null);

  const chosen = useMemo(() => {
    if (!columns.data) return null;
    if (shown) return shown.filter((c) => (c.startsWith("p:") ? columns.data.params.includes(c.slice(2))
                                                               : columns.data.metrics.includes(c.slice(2))));
    return [...columns.data.metrics.slice(0, 6).map((k) => "m:" + k), ...columns.data.params.slice(0, 4).map((k) => "p:" + k)];
  }, [columns.data, shown]);

  useEffect(() => {
    if (!chosen || !tabulator) return;
    const sortField = { name: "name", status: "status", start_time: "start_time", duration_ms: "duration", user: "user" };
    const cols = [
      { formatter: "rowSelection", titleFormatter: "rowSelection", hozAlign: "center", headerSort: false, width: 36 },
      { title: "run", field: "name", formatter: (c) => `<a href="#/run/${c.getRow().getData().id}">${c.getValue()}</a>`, width: 170 },
      { title: "status", field: "status", formatter: (c) => `<span class="badge ${c.getValue()}">${c.getValue()}</span>`, width: 100 },
      { title: "started", field: "start_time", formatter: (c) => fmtTime(c.getValue()), width: 160 },
      { title: "duration", field: "duration_ms", formatter: (c) => fmtDuration(c.getValue()), width: 95 },
      { title: "user", field: "user", width: 90 },
      { title: "commit", field: "commit", headerSort: false, width: 86,
        formatter: (c) => (c.getValue() ? `<span class="mono">${c.getValue().slice(0, 7)}${c.getRow().getData().dirty ? "*" : ""}</span>` : "") },
      { title: "data", field: "data", headerSort: false, width: 150,
        formatter: (c) => (c.getValue() || []).map((d) => `<span class="mono" title="${d.digest}">${d.path}@${d.digest.slice(0, 7)}</span>`).join("<br>") },
      ...chosen.map((c) => ({ title: c.slice(2), field: c, headerTooltip: (c.startsWith("m:") ? "metric " : "param ") + c.slice(2),
                              hozAlign: c.startsWith("m:") ? "right" : "left", formatter: (x) => fmtNumber(x.getValue()), minWidth: 90 })),
    ];
    table.current = new window.Tabulator(holder.current, {
      layout: "fitDataStretch", height: "calc(100vh - 210px)", placeholder: "no runs match",
      nestedFieldSeparator: false, columns: cols, index: "id",
      pagination: true, paginationMode: "remote", paginationSize: 50, paginationSizeSelector: [25, 50, 100, 250],
      sortMode: "remote", initialSort: [{ column: "start_time", dir: "desc" }],
      ajaxURL: API + "/runs",
      ajaxConfig: { headers: token() ? { Authorization: `Bearer ${token()}` } : {} },
      ajaxURLGenerator: (url, _config, params) => {
        const sort = (params.sort || []).map((s) => {
          const f = s.field;
          const key = f.startsWith("m:") ? "metrics." + f.slice(2) : f.startsWith("p:") ? "params." + f.slice(2) : sortField[f] || f;
          return (s.dir === "desc" ? "-" : "") + key;
        }).join(",");
        const q = new URLSearchParams({ page: params.page, size: params.size, sort: sort || "-start_time", filter: applied });
        if (experiment) q.set("experiment", experiment);
        return `${url}?${q}`;
      },
      ajaxResponse: (_url, _params, answer) => {
        setTotal(answer.total); setError(answer.filter_error || null);
        const data = answer.rows.map((r) => {
          const flat = { ...r };
          for (const [k, v] of Object.entries(r.params)) flat["p:" + k] = v;
          for (const [k, v] of Object.entries(r.metrics)) flat["m:" + k] = v;
          return flat;
        });
        return { last_page: answer.last_page, data };
      },
      dataLoaderError: "",
    });
    table.current.on("dataLoadError", (e) => {
      e.json ? e.json().then((b) => setError(b.message || b.detail || "the runs could not be read")) : setError(String(e));
    });
    table.current.on("rowSelectionChanged", (data) => setSelected(data.map((d) => d.id)));
    return () => { table.current.destroy(); table.current = null; };
  }, [chosen, applied, experiment, tabulator]);

  const toggle = (c) => {
    const next = chosen.includes(c) ? chosen.filter((x) => x !== c) : [...chosen, c];
    localStorage.setItem("molen.columns", JSON.stringify(next));
    setShown(next);
  };
  const submit = (e) => { e.preventDefault(); setApplied(filter); };
  const expLink = (name) => `#/runs${name ? "?experiment=" + encodeURIComponent(name) : ""}`;

  return html`<div class="layout">
    <aside class="side">
      <h2>Experiments</h2>
      <a href=${expLink("")} class=${experiment ? "" : "active"}>all</a>
      ${(experiments.data?.experiments || []).map((e) => html`<a href=${expLink(e.name)} class=${experiment === e.name ? "active" : ""}>
        <span>${e.name}</span><span class="muted">${e.run_count}</span></a>`)}
    </aside>
    <section>
      <h1>Runs ${total != null ? html`<span class="muted" data-total=${total}>(${total})</span>` : ""}</h1>
      <form class="toolbar" onSubmit=${submit}>
        <input type="text" name="filter" placeholder="filter, e.g. metrics.auc > 0.9 and params.max_depth = '8'" value=${filter}
          onInput=${(e) => setFilter(e.target.value)} />
        <button type="submit">Filter</button>
        <button type="button" class="primary" disabled=${selected.length < 2}
          onClick=${() => go("compare/" + selected.join(","))}>Compare ${selected.length || ""}</button>
        <span class="chooser">
          <button type="button" onClick=${() => setChooser(!chooser)}>Columns</button>
          ${chooser && columns.data && html`<div class="menu">
            <strong>metrics</strong>
            ${columns.data.metrics.map((k) => html`<label><input type="checkbox" checked=${chosen.includes("m:" + k)} onChange=${() => toggle("m:" + k)} /> ${k}</label>`)}
            <strong>params</strong>
            ${columns.data.params.map((k) => html`<label><input type="checkbox" checked=${chosen.includes("p:" + k)} onChange=${() => toggle("p:" + k)} /> ${k}</label>`)}
          </div>`}
        </span>
      </form>
      <${Err} e=${error || columns.error} />
      <div ref=${holder} id="runs-table"></div>
    </section>
  </div>`;
}

// -- one run --------------------------------------------------------------------------------------

function Artifacts({ run }) {
  const [open, setOpen] = useState(null);
  const files = run.artifacts.filter((a) => !a.path.startsWith("molen/"));
  useEffect(() => { setOpen(files.length ? files[0].path : null); }, [run.id]);
  if (!run.artifacts.length) return html`<p class="muted">no artifacts</p>`;
  const url = (p) => `${API}/runs/${run.id}/artifacts/${p.split("/").map(encodeURIComponent).join("/")}`;
  return html`<div class="grid2 artifacts">
    <table class="kv"><tbody>
      ${run.artifacts.map((a) => html`<tr><td><a href="javascript:void 0" class=${open === a.path ? "active" : ""}
        onClick=${() => setOpen(a.path)}>${a.path}</a></td><td class="muted">${fmtNumber(a.size)} B</td>
        <td><a href=${url(a.path) + "?download=1"}>download</a></td></tr>`)}
    </tbody></table>
    <div class="preview">${open && html`<${Preview} url=${url(open)} path=${open} />`}</div>
  </div>`;
}

function Preview({ url, path }) {
  const [text, setText] = useState(null);
  const kind = /\.(png|jpe?g|gif|svg|webp)$/i.test(path) ? "image" : /\.html?$/i.test(path) ? "html" : "text";
  useEffect(() => {
    setText(null);
    if (kind === "text") fetch(url).then((r) => r.text()).then((t) => {
      if (path.endsWith(".json")) { try { t = JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* as is */ } }
      setText(t.length > 200000 ? t.slice(0, 200000) + "\n…" : t);
    });
  }, [url]);
  if (kind === "image") return html`<img src=${url} alt=${path} />`;
  if (kind === "html") return html`<iframe src=${url} sandbox="" title=${path}></iframe>`;
  return html`<pre class="mono">${text == null ? "loading…" : text}</pre>`;
}

function RunCharts({ runIds, keys, names, preloaded }) {
  const [log, setLog] = useState(false);
  const [weight, setWeight] = useState(0);
  const wanted = keys.slice(0, 24);
  const fetched = useApi(!preloaded && wanted.length ? `/metrics?runs=${runIds.join(",")}&keys=${wanted.map(encodeURIComponent).join(",")}` : null,
                         [runIds.join(","), wanted.join(","), !!preloaded]);
  const series = preloaded ? { data: { series: { [runIds[0]]: preloaded } }, error: null } : fetched;
  if (!wanted.length) return html`<p class="muted">no metrics</p>`;
  return html`<div>
    <div class="toolbar"><${CurveControls} log=${log} setLog=${setLog} weight=${weight} setWeight=${setWeight} /></div>
    <${Err} e=${series.error} />
    ${series.data ? html`<div class="cards">${wanted.map((key) => html`<${Chart} label=${"metric " + key}
        option=${curveOption(key, runIds.map((r) => ({ name: names[r] || short(r), points: series.data.series[r]?.[key] || [] })), { log, weight })} />`)}</div>`
      : html`<${Loading} />`}
  </div>`;
}

function TagForm({ run, onDone }) {
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const [error, setError] = useState(null);
  const submit = (e) => {
    e.preventDefault();
    api(`/runs/${run.id}/tags`, { method: "POST", body: { [key]: value } })
      .then(() => { setKey(""); setValue(""); setError(null); onDone(); }, (x) => setError(x.message));
  };
  return html`<form class="toolbar" onSubmit=${submit}>
    <input placeholder="tag" value=${key} onInput=${(e) => setKey(e.target.value)} required />
    <input placeholder="value" value=${value} onInput=${(e) => setValue(e.target.value)} />
    <button type="submit">Set tag</button><${Err} e=${error} /></form>`;
}

function RunPage({ id }) {
  const [version, setVersion] = useState(0);
  useEffect(() => { loadEcharts(); }, []);  // while the run is on its way
  const { data: run, error } = useApi(`/runs/${id}?history=24`, [id, version]);
  if (error) return html`<${Err} e=${error} />`;
  if (!run) return html`<${Loading} />`;
  const keys = Object.keys(run.metrics);
  return html`<div>
    <h1>${run.name} <${Status} s=${run.status} /> <span class="muted mono">${run.id}</span></h1>
    <div class="grid2">
      <table class="kv"><tbody>
        <tr><th>experiment</th><td><a href=${"#/runs?experiment=" + encodeURIComponent(run.experiment)}>${run.experiment}</a></td></tr>
        <tr><th>started</th><td>${fmtTime(run.start_time)}</td></tr>
        <tr><th>duration</th><td>${fmtDuration(run.duration_ms)}</td></tr>
        <tr><th>user, host</th><td>${run.user || ""} ${run.host ? "on " + run.host : ""}</td></tr>
        <tr><th>commit</th><td class="mono">${run.commit || ""}${run.dirty ? " (uncommitted changes)" : ""}</td></tr>
        ${run.parent_id && html`<tr><th>parent</th><td><a href=${"#/run/" + run.parent_id}>${short(run.parent_id)}</a></td></tr>`}
        ${run.children.length > 0 && html`<tr><th>children</th><td>${run.children.map((c) => html`<a href=${"#/run/" + c.id}>${c.name}</a> `)}</td></tr>`}
        <tr><th>models</th><td>${run.models.map((m) => html`<a href=${"#/model/" + encodeURIComponent(m.name)}>${m.name}/${m.version}</a>
          ${m.aliases.map((a) => html` <span class="badge alias">${a}</span>`)} `)}</td></tr>
      </tbody></table>
      <div>
        <h2 style="margin-top:0">Data inputs</h2>
        ${run.data.length ? html`<table class="kv"><tbody>${run.data.map((d) => html`<tr><td>${d.role}</td>
          <td><a href=${"#/data?path=" + encodeURIComponent(d.path)}>${d.path}</a></td><td class="mono" title=${d.digest}>${d.digest.slice(0, 12)}</td></tr>`)}</tbody></table>`
          : html`<p class="muted">no data inputs recorded</p>`}
      </div>
    </div>
    <h2>Metric charts</h2>
    <${RunCharts} runIds=${[run.id]} keys=${keys.sort()} names=${{ [run.id]: run.name }} preloaded=${run.series} />
    <div class="grid2">
      <div><h2>Params</h2><table class="kv"><tbody>${Object.entries(run.params).map(([k, v]) => html`<tr><th>${k}</th><td class="mono">${v}</td></tr>`)}</tbody></table></div>
      <div><h2>Metrics (latest)</h2><table class="kv"><tbody>${Object.entries(run.metrics).map(([k, v]) => html`<tr><th>${k}</th><td>${fmtNumber(v)}</td></tr>`)}</tbody></table></div>
    </div>
    <h2>Tags</h2>
    <table class="kv"><tbody>${Object.entries(run.tags).map(([k, v]) => html`<tr><th>${k}</th><td>${v}</td></tr>`)}</tbody></table>
    <${TagForm} run=${run} onDone=${() => setVersion(version + 1)} />
    <h2>Artifacts</h2>
    <${Artifacts} run=${run} />
    <${DeleteRun} run=${run} />
  </div>`;
}

function DeleteRun({ run }) {
  const [state, setState] = useState({ deleted: false, error: null });
  const act = (restore) => api(`/runs/${run.id}/delete?restore=${restore}`, { method: "POST", body: {} })
    .then(() => setState({ deleted: !restore, error: null }), (x) => setState({ ...state, error: x.message }));
  return html`<div class="toolbar" style="margin-top:24px">
    ${state.deleted ? html`<span class="muted" id="run-deleted">deleted (hidden from lists; molen runs restore brings it back)</span>
        <button onClick=${() => act(true)}>Restore</button>`
      : html`<button onClick=${() => confirm(`Delete run ${run.name}? It is hidden, not erased.`) && act(false)}>Delete run</button>`}
    <${Err} e=${state.error} /></div>`;
}

// -- compare --------------------------------------------------------------------------------------

function DiffTable({ title, rows, runs }) {
  const [onlyDiff, setOnlyDiff] = useState(false);
  const shown = onlyDiff ? rows.filter((r) => r.differs) : rows;
  return html`<div><h2>${title} <label class="muted" style="font-weight:400"><input type="checkbox" checked=${onlyDiff}
      onChange=${(e) => setOnlyDiff(e.target.checked)} /> only differences</label></h2>
    <table class="kv"><thead><tr><th></th>${runs.map((r) => html`<th>${r.name}</th>`)}</tr></thead>
    <tbody>${shown.map((r) => html`<tr class=${r.differs ? "differs" : ""}><th>${r.key}</th>
      ${r.values.map((v) => html`<td class="mono">${fmtNumber(v)}</td>`)}</tr>`)}</tbody></table></div>`;
}

function parallelOption(runs, params, metric) {
  const dims = [...params, metric];
  const categorical = dims.map((d, i) => i < params.length && runs.some((r) => r.params[d] != null && isNaN(+r.params[d])));
  return {
    animation: false,
    tooltip: {},
    parallelAxis: dims.map((d, i) => {
      const axis = { dim: i, name: d, nameTextStyle: { fontSize: 12 } };
      if (categorical[i]) { axis.type = "category"; axis.data = [...new Set(runs.map((r) => String(r.params[d] ?? "")))]; }
      return axis;
    }),
    parallel: { left: 40, right: 80, top: 40, bottom: 30 },
    visualMap: { show: true, type: "continuous", dimension: dims.length - 1, right: 0, top: 40, itemHeight: 120, text: [metric, ""],
      min: Math.min(...runs.map((r) => +r.metrics[metric]).filter(Number.isFinite)),
      max: Math.max(...runs.map((r) => +r.metrics[metric]).filter(Number.isFinite)), inRange: { color: ["#d94e5d", "#eac736", "#50a3ba"] } },
    series: [{ type: "parallel", lineStyle: { width: 2, opacity: 0.8 },
      data: runs.map((r) => dims.map((d, i) => (i < params.length ? (categorical[i] ? String(r.params[d] ?? "") : +r.params[d]) : +r.metrics[d]))) }],
  };
}

function ComparePage({ ids }) {
  useEffect(() => { loadEcharts(); }, []);
  const { data, error } = useApi(`/compare?runs=${ids.join(",")}`, [ids.join(",")]);
  const [metric, setMetric] = useState(null);
  if (error) return html`<${Err} e=${error} />`;
  if (!data) return html`<${Loading} />`;
  const keys = data.metrics.map((m) => m.key);
  const chosen = metric || keys[0];
  const params = data.params.map((p) => p.key);
  const names = Object.fromEntries(data.runs.map((r) => [r.id, r.name]));
  return html`<div>
    <h1>Compare ${data.runs.length} runs</h1>
    <p>${data.runs.map((r) => html`<a href=${"#/run/" + r.id}>${r.name}</a> <${Status} s=${r.status} /> `)}</p>
    <h2>Metric curves</h2>
    <${RunCharts} runIds=${data.runs.map((r) => r.id)} keys=${keys} names=${names} />
    ${keys.length > 0 && params.length > 0 && html`<div>
      <h2>Params against <select aria-label="metric" onChange=${(e) => setMetric(e.target.value)}>${keys.map((k) => html`<option value=${k} selected=${k === chosen}>${k}</option>`)}</select></h2>
      <${Chart} tall label="parallel coordinates" option=${parallelOption(data.runs, params, chosen)} /></div>`}
    <div class="grid2">
      <${DiffTable} title="Params" rows=${data.params} runs=${data.runs} />
      <${DiffTable} title="Metrics" rows=${data.metrics} runs=${data.runs} />
      <${DiffTable} title="Data versions" rows=${data.data} runs=${data.runs} />
      <${DiffTable} title="Code" rows=${data.code} runs=${data.runs} />
    </div>
  </div>`;
}

// -- models ---------------------------------------------------------------------------------------

function ModelsPage() {
  const { data, error } = useApi("/models");
  if (error) return html`<${Err} e=${error} />`;
  if (!data) return html`<${Loading} />`;
  return html`<div><h1>Models</h1>
    ${data.models.length === 0 ? html`<p class="muted">no registered models yet: run.log_model(model, "name") registers one</p>` : ""}
    <table class="kv"><thead><tr><th>model</th><th>versions</th><th>latest</th><th>aliases</th><th>created</th></tr></thead>
    <tbody>${data.models.map((m) => html`<tr><td><a href=${"#/model/" + encodeURIComponent(m.name)}>${m.name}</a></td>
      <td>${m.version_count}</td><td>${m.latest_version}</td>
      <td>${Object.entries(m.aliases).map(([a, v]) => html`<span class="badge alias">${a} → ${v}</span>`)}</td>
      <td>${fmtTime(m.created_at)}</td></tr>`)}</tbody></table></div>`;
}

function importanceOption(importance) {
  const top = Object.entries(importance).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 15).reverse();
  return { animation: false, grid: { left: 140, right: 20, top: 10, bottom: 24 }, tooltip: {},
    xAxis: { type: "value", name: "mean |SHAP|" }, yAxis: { type: "category", data: top.map((t) => t[0]) },
    series: [{ type: "bar", data: top.map((t) => t[1]), itemStyle: { color: "#2f6fdb" } }] };
}

function AliasForm({ name, versions, onDone }) {
  const [alias, setAlias] = useState("production");
  const [version, setVersion] = useState(versions[0]?.version || 1);
  const [error, setError] = useState(null);
  const submit = (e) => {
    e.preventDefault();
    api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, { method: "POST", body: { version: +version } })
      .then(() => { setError(null); onDone(); }, (x) => setError(x.message));
  };
  return html`<form class="toolbar" onSubmit=${submit} aria-label="move an alias">
    <input name="alias" value=${alias} onInput=${(e) => setAlias(e.target.value)} required />
    <select name="version" value=${version} onChange=${(e) => setVersion(e.target.value)}>
      ${versions.map((v) => html`<option value=${v.version}>version ${v.version}</option>`)}</select>
    <button type="submit" class="primary">Move alias</button><${Err} e=${error} /></form>`;
}

function ModelPage({ name }) {
  const [version, setVersion] = useState(0);
  const { data, error } = useApi(`/models/${encodeURIComponent(name)}`, [name, version]);
  const [cardOf, setCardOf] = useState(null);
  if (error) return html`<${Err} e=${error} />`;
  if (!data) return html`<${Loading} />`;
  const card = cardOf || data.versions.find((v) => v.flavor !== "mlflow")?.version;
  const withImportance = data.versions.find((v) => v.importance && Object.keys(v.importance).length);
  return html`<div>
    <h1>${name}</h1>
    <h2>Versions</h2>
    <table class="kv" id="versions"><thead><tr><th>version</th><th>aliases</th><th>run</th><th>commit</th><th>data</th><th>flavor</th><th>created</th><th>by</th><th></th></tr></thead>
    <tbody>${data.versions.map((v) => html`<tr><td>${v.version}</td>
      <td>${v.aliases.map((a) => html`<span class="badge alias">${a}</span>`)}</td>
      <td>${v.run_id ? html`<a href=${"#/run/" + v.run_id}>${v.lineage?.run || short(v.run_id)}</a>` : ""}</td>
      <td class="mono">${(v.lineage?.commit || "").slice(0, 7)}</td>
      <td>${(v.lineage?.data || []).map((d) => html`<a class="mono" title=${d.digest} href=${"#/data?path=" + encodeURIComponent(d.path)}>${d.path}@${d.digest.slice(0, 7)}</a> `)}</td>
      <td>${v.flavor}</td><td>${fmtTime(v.created_at)}</td><td>${v.user || ""}</td>
      <td>${v.flavor !== "mlflow" && html`<a href="javascript:void 0" onClick=${() => setCardOf(v.version)}>card</a>`}</td></tr>`)}</tbody></table>
    <${AliasForm} name=${name} versions=${data.versions} onDone=${() => setVersion(version + 1)} />
    <h2>Alias history</h2>
    <table class="kv" id="alias-history"><thead><tr><th>when</th><th>alias</th><th>move</th><th>by</th></tr></thead>
    <tbody>${[...data.history].reverse().map((e) => html`<tr><td>${fmtTime(e.time)}</td><td>${e.alias}</td>
      <td>${e.action}: ${e.previous ?? "–"} → ${e.version ?? "–"}</td><td>${e.user || ""}</td></tr>`)}</tbody></table>
    <h2>Gate verdicts</h2>
    ${data.verdicts.length ? html`<table class="kv"><thead><tr><th>when</th><th>candidate</th><th>against</th><th>verdict</th></tr></thead>
      <tbody>${data.verdicts.map((v) => html`<tr><td>${fmtTime(v.time)}</td><td>${v.candidate}</td><td>${v.against_alias} (${v.against_version ?? "none"})</td>
      <td>${v.passed ? html`<span class="badge FINISHED">PASSED</span>` : html`<span class="badge FAILED">FAILED</span>`}</td></tr>`)}</tbody></table>`
      : html`<p class="muted">no gate has judged this model yet (molen models promote … --gate)</p>`}
    ${withImportance && html`<div><h2>Global feature importance (version ${withImportance.version})</h2>
      <${Chart} label="importance" option=${importanceOption(withImportance.importance)} /></div>`}
    ${card && html`<div><h2>Model card (version ${card})</h2>
      <div class="preview"><iframe sandbox="" title="model card" src=${`${API}/models/${encodeURIComponent(name)}/${card}/card`}></iframe></div></div>`}
  </div>`;
}

// -- the project's pages: data, pipeline, monitoring ----------------------------------------------

function fmtBytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function DataPage({ query }) {
  const { data, error } = useApi("/project/data");
  const path = query.get("path");
  const history = useApi(path ? `/project/data/history?path=${encodeURIComponent(path)}` : null, [path]);
  if (error) return html`<${Err} e=${error} />`;
  if (!data) return html`<${Loading} />`;
  return html`<div><h1>Data</h1>
    ${data.paths.length === 0 ? html`<p class="muted">nothing tracked yet: molen data add PATH</p>` : ""}
    <table class="kv" id="data-paths"><thead><tr><th>path</th><th>kind</th><th>size</th><th>files</th><th>version</th><th>runs</th></tr></thead>
    <tbody>${data.paths.map((p) => html`<tr class=${p.path === path ? "differs" : ""}>
      <td><a href=${"#/data?path=" + encodeURIComponent(p.path)}>${p.path}</a></td><td>${p.kind}</td><td>${fmtBytes(p.size)}</td>
      <td>${p.files}</td><td class="mono" title=${p.hash}>${p.hash.slice(0, 12)}</td><td>${p.runs}</td></tr>`)}</tbody></table>
    ${path && html`<div><h2>Versions of ${path}</h2><${Err} e=${history.error} />
      ${history.data ? html`<table class="kv" id="data-history"><thead><tr><th>commit</th><th>date</th><th>author</th><th>message</th><th>version</th><th>size</th><th>used by runs</th><th>models</th></tr></thead>
        <tbody>${history.data.versions.map((v) => html`<tr><td class="mono">${v.commit.slice(0, 8)}</td><td>${v.date}</td><td>${v.author}</td>
          <td>${v.subject}</td><td class="mono" title=${v.hash}>${v.hash.slice(0, 12)}</td><td>${fmtBytes(v.size)}</td>
          <td>${v.runs.map((r) => html`<a href=${"#/run/" + r.id}>${r.name}</a> `)}</td>
          <td>${v.models.map((m) => html`<a href=${"#/model/" + encodeURIComponent(m.name)}>${m.name}/${m.version}</a> `)}</td></tr>`)}</tbody></table>`
        : html`<${Loading} />`}</div>`}
  </div>`;
}

function dagOption(stages, edges) {
  const depth = {};
  const ups = Object.fromEntries(stages.map((s) => [s.name, []]));
  for (const [up, down] of edges) ups[down].push(up);
  const level = (name) => (depth[name] ??= ups[name].length ? 1 + Math.max(...ups[name].map(level)) : 0);
  stages.forEach((s) => level(s.name));
  const rows = {};
  const nodes = stages.map((s) => {
    const x = depth[s.name];
    const y = (rows[x] = (rows[x] ?? -1) + 1);
    return { name: s.name, x: x * 220, y: y * 90, symbolSize: [150, 44], symbol: "roundRect",
             itemStyle: { color: s.stale ? "#fff1c2" : "#dafbe1", borderColor: s.stale ? "#bf8700" : "#1f883d", borderWidth: 1.5 },
             label: { show: true, color: "#1d2430", lineHeight: 17, formatter: `${s.name}\n${s.stale ? "stale" : "up to date"}` } };
  });
  return { animation: false, tooltip: { formatter: (p) => (p.dataType === "node" ? stages.find((s) => s.name === p.name).cmd : "") },
    series: [{ type: "graph", layout: "none", roam: true, data: nodes,
      links: edges.map(([a, b]) => ({ source: a, target: b })), edgeSymbol: ["none", "arrow"], edgeSymbolSize: 9,
      lineStyle: { color: "#98a2b3", width: 1.5 } }] };
}

function PipelinePage() {
  const { data, error } = useApi("/project/pipeline");
  if (error) return html`<${Err} e=${error} />`;
  if (!data) return html`<${Loading} />`;
  if (!data.stages.length) return html`<div><h1>Pipeline</h1><p class="muted">no stages: declare them under stages: in molen.yaml</p></div>`;
  return html`<div><h1>Pipeline</h1>
    <${Chart} tall label="pipeline" option=${dagOption(data.stages, data.edges)} />
    <table class="kv" id="stages"><thead><tr><th>stage</th><th>state</th><th>command</th><th>deps</th><th>outs</th><th>why</th></tr></thead>
    <tbody>${data.stages.map((s) => html`<tr><td>${s.name}</td>
      <td>${s.stale ? html`<span class="badge RUNNING">stale</span>` : html`<span class="badge FINISHED">up to date</span>`}</td>
      <td class="mono">${s.cmd}</td><td class="mono">${s.deps.join(", ")}</td><td class="mono">${s.outs.join(", ")}</td>
      <td>${s.reasons.join("; ")}</td></tr>`)}</tbody></table></div>`;
}

function MonitorPage({ query }) {
  const models = useApi("/models");
  const [window_, setWindow] = useState(query.get("window") || "7d");
  const deployed = (models.data?.models || []).flatMap((m) => Object.keys(m.aliases).map((a) => `${m.name}@${a}`));
  const chosen = query.get("model") || deployed[0];
  const report = useApi(chosen ? `/project/monitor?model=${encodeURIComponent(chosen)}&window=${window_}` : null, [chosen, window_]);
  if (models.error) return html`<${Err} e=${models.error} />`;
  if (!models.data) return html`<${Loading} />`;
  if (!deployed.length) return html`<div><h1>Monitoring</h1><p class="muted">no model has an alias yet: molen models alias NAME VERSION production</p></div>`;
  const pick = (model, w) => go(`monitor?model=${encodeURIComponent(model)}&window=${w}`);
  const r = report.data;
  return html`<div><h1>Monitoring</h1>
    <div class="toolbar">
      <select aria-label="model" onChange=${(e) => pick(e.target.value, window_)}>${deployed.map((d) => html`<option value=${d} selected=${d === chosen}>${d}</option>`)}</select>
      <select aria-label="window" onChange=${(e) => { setWindow(e.target.value); pick(chosen, e.target.value); }}>
        ${["1h", "1d", "7d", "30d"].map((w) => html`<option value=${w} selected=${w === window_}>last ${w}</option>`)}</select>
      ${r && html`<span class="badge ${r.status === "ok" ? "FINISHED" : r.status === "warning" ? "RUNNING" : "FAILED"}" id="monitor-status">${r.status}</span>`}
      ${r && html`<span class="muted">${fmtNumber(r.volume?.rows ?? 0)} predictions</span>`}
    </div>
    <${Err} e=${report.error} />
    ${r && (r.alerts || []).length > 0 && html`<div class="panel"><strong>alerts</strong><ul>${r.alerts.map((a) => html`<li>${a.rule || a.name || JSON.stringify(a)}</li>`)}</ul></div>`}
    ${report.data ? html`<div class="preview"><iframe sandbox="" title="monitoring report" style="height: 1400px"
        src=${`${API}/project/monitor?model=${encodeURIComponent(chosen)}&window=${window_}&format=html`}></iframe></div>`
      : !report.error && html`<${Loading} />`}
  </div>`;
}

// -- shell ----------------------------------------------------------------------------------------

function TokenBox() {
  const [value, setValue] = useState(token());
  const save = () => { localStorage.setItem("molen.token", value.trim()); location.reload(); };
  return html`<span class="token">write token <input type="password" size="14" value=${value}
    onInput=${(e) => setValue(e.target.value)} onKeyDown=${(e) => e.key === "Enter" && save()} /></span>`;
}

function App() {
  const [where, setWhere] = useState(route());
  useEffect(() => {
    const moved = () => setWhere(route());
    window.addEventListener("hashchange", moved);
    return () => window.removeEventListener("hashchange", moved);
  }, []);
  const project = useApi("/project", []);
  const [page, ...rest] = where.parts;
  let body;
  if (!page || page === "runs") body = html`<${RunsPage} query=${where.query} key=${location.hash} />`;
  else if (page === "run") body = html`<${RunPage} id=${rest[0]} />`;
  else if (page === "compare") body = html`<${ComparePage} ids=${(rest[0] || "").split(",")} />`;
  else if (page === "models") body = html`<${ModelsPage} />`;
  else if (page === "model") body = html`<${ModelPage} name=${rest[0]} />`;
  else if (page === "data") body = html`<${DataPage} query=${where.query} />`;
  else if (page === "pipeline") body = html`<${PipelinePage} />`;
  else if (page === "monitor") body = html`<${MonitorPage} query=${where.query} key=${location.hash} />`;
  else body = html`<p>No page here. <a href="#/runs">Runs</a></p>`;
  const tab = (name, label) => html`<a href=${"#/" + name} class=${(page || "runs") === name || (page === "run" && name === "runs") || (page === "model" && name === "models") ? "active" : ""}>${label}</a>`;
  return html`<header class="top"><span class="brand">molen</span>
      <nav>${tab("runs", "Runs")}${tab("models", "Models")}${project.data?.name ? html`${tab("data", "Data")}${tab("pipeline", "Pipeline")}${tab("monitor", "Monitoring")}` : ""}</nav>
      ${project.data?.name && html`<span class="muted">project ${project.data.name}</span>`}<${TokenBox} /></header>
    <main>${body}</main>`;
}

const root = document.getElementById("app");
root.textContent = "";  // the "loading" line
render(html`<${App} />`, root);
