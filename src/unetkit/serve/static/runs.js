// The page's runs view (loaded before app.js, sharing its globals): curves of metrics.csv side by side, the
// validation overlays across epochs, each run's config and the difference of two.
"use strict";

// --- the runs view ----------------------------------------------------------------------------------------

const RUN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function checkedRuns() { return [...document.querySelectorAll("#run-list input:checked")].map((i) => i.value); }
function checkedMetrics() { return [...document.querySelectorAll("#metric-list input:checked")].map((i) => i.value); }

async function loadRuns() {
  state.runs = await api("GET", "/api/runs");
  const list = $("run-list");
  list.replaceChildren(...state.runs.map((run, i) => el("label", {},
    el("input", { type: "checkbox", value: run.name, checked: i < 4 }), ` ${run.name}` +
    (run.model ? ` (${run.model}, ${run.epochs} epochs)` : ""))));
  for (const input of list.querySelectorAll("input")) input.addEventListener("change", renderRuns);
  for (const id of ["diff-a", "diff-b"]) {
    $(id).replaceChildren(...state.runs.map((run) => el("option", { value: run.name }, run.name)));
    $(id).addEventListener("change", renderDiff);
  }
  if (state.runs.length > 1) $("diff-b").value = state.runs[1].name;
  await Promise.all(state.runs.map(async (run) => {
    state.metrics.set(run.name, await api("GET", `/api/runs/${encodeURIComponent(run.name)}/metrics`));
    state.samples.set(run.name, await api("GET", `/api/runs/${encodeURIComponent(run.name)}/samples`));
  }));
  const columns = [];
  for (const table of state.metrics.values()) for (const c of table.columns) if (c !== "epoch" && !columns.includes(c)) columns.push(c);
  const preferred = ["train_loss", "val_loss", "dice", "iou", "psnr"];
  $("metric-list").replaceChildren(...columns.map((c) => el("label", {},
    el("input", { type: "checkbox", value: c, checked: preferred.includes(c) }), ` ${c}`)));
  for (const input of $("metric-list").querySelectorAll("input")) input.addEventListener("change", renderCharts);
  renderRuns();
  renderDiff();
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(metric, runs) {
  const W = 380, H = 240, L = 48, R = 10, T = 22, B = 30, series = [];
  for (const name of runs) {
    const table = state.metrics.get(name);
    const xi = table.columns.indexOf("epoch"), yi = table.columns.indexOf(metric);
    if (yi < 0) continue;
    const points = table.rows.map((row, i) => [xi >= 0 ? row[xi] : i + 1, row[yi]]).filter(([x, y]) => x !== null && y !== null);
    if (points.length) series.push({ name, points, colour: RUN_COLOURS[state.runs.findIndex((r) => r.name === name) % RUN_COLOURS.length] });
  }
  const box = el("div", { className: "chart", dataset: { metric } });
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  root.append(svg("text", { x: L, y: 14, "font-weight": "600" }, metric));
  box.append(root);
  if (!series.length) { root.append(svg("text", { x: L, y: H / 2 }, "no values")); return box; }
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), py = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const [value, y] of [[y0, H - B], [y1, T + 8]]) root.append(svg("text", { x: 4, y }, Number(value.toPrecision(3)).toString()));
  root.append(svg("text", { x: L, y: H - 10 }, `epoch ${x0}`), svg("text", { x: W - R - 50, y: H - 10 }, `${x1}`));
  series.forEach((s, i) => {
    root.append(svg("polyline", { points: s.points.map(([x, y]) => `${px(x)},${py(y)}`).join(" "), fill: "none", stroke: s.colour, "stroke-width": 2 }));
    for (const [x, y] of s.points) root.append(svg("circle", { cx: px(x), cy: py(y), r: 2.5, fill: s.colour }));
    const label = svg("text", { x: W - R - 120, y: 14 + i * 13 }, s.name);
    label.style.fill = s.colour;  // over the stylesheet's ink colour of chart text
    root.append(label);
  });
  return box;
}

function renderCharts() {
  const runs = checkedRuns();
  $("charts").replaceChildren(...checkedMetrics().map((metric) => chart(metric, runs)));
}

function renderRuns() {
  renderCharts();
  const runs = checkedRuns();
  $("samples").replaceChildren(...runs.map((name) => {
    const samples = state.samples.get(name) || [];
    const block = el("div", { className: "sample", dataset: { run: name } }, el("strong", {}, name));
    if (!samples.length) { block.append(el("span", { className: "muted" }, " no validation overlays")); return block; }
    const label = el("span", { className: "epoch" }), image = el("img", { alt: `${name} validation overlays` });
    const slider = el("input", { type: "range", min: 0, max: samples.length - 1, value: samples.length - 1 });
    const show = () => {
      const sample = samples[Number(slider.value)];
      image.src = `/api/runs/${encodeURIComponent(name)}/samples/${encodeURIComponent(sample.file)}`;
      label.textContent = ` epoch ${sample.epoch} of ${samples[samples.length - 1].epoch}`;
    };
    slider.addEventListener("input", show);
    block.append(" ", slider, label, image);
    show();
    return block;
  }));
  Promise.all(runs.map(async (name) => el("details", { open: runs.length <= 2 }, el("summary", {}, `${name}/config.yaml`),
    el("pre", {}, await api("GET", `/api/runs/${encodeURIComponent(name)}/config`) || "(no config.yaml)"))))
    .then((blocks) => $("configs").replaceChildren(...blocks));
}

async function renderDiff() {
  const a = $("diff-a").value, b = $("diff-b").value;
  if (!a || !b) return;
  const diff = await api("GET", `/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  const shown = (v) => (v === null || v === undefined ? "-" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const rows = [el("tr", {}, el("th", {}, "setting"), el("th", {}, a), el("th", {}, b))];
  for (const change of diff.changed) rows.push(el("tr", {}, el("td", {}, change.key), el("td", {}, shown(change.a)), el("td", {}, shown(change.b))));
  if (!diff.changed.length) rows.push(el("tr", {}, el("td", { colSpan: 3 }, a === b ? "the same run" : "the configs are equal")));
  $("diff-table").replaceChildren(...rows);
  $("diff-lines").replaceChildren(...diff.lines.split("\n").filter(Boolean).map((line) =>
    el("div", { className: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "" }, line)));
}

