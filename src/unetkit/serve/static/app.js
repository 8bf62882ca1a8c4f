// The page of `unetkit serve`: uploads and predictions, a tiled viewer for images of any size, metrics, and
// the runs view. Plain JavaScript, no build step; everything it shows comes from the server's /api.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, jobs: new Map(), current: null, runs: [], metrics: new Map(), samples: new Map() };
const IMAGE_SUFFIXES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"];
const TRUTH_SUFFIXES = ["_mask", "_masks", "_gt", "_label", "_labels", "_seg"];
const TRUTH_FOLDERS = ["masks", "mask", "labels", "gt", "ground_truth", "groundtruth"];
const ERROR_COLOURS = [["correct foreground", "rgb(0,200,0)"], ["false positive", "rgb(230,30,30)"],
  ["false negative", "rgb(40,90,255)"]];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(method, url, body) {
  const options = { method, headers: { "X-Unetkit": "1" } };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, options);
  const data = (response.headers.get("content-type") || "").includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(data && data.error ? data.error : `${url}: HTTP ${response.status}`);
  return data;
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

// --- files: pairing images with their ground truth --------------------------------------------------------

function splitName(path) {
  const parts = path.split("/");
  const name = parts[parts.length - 1];
  const dot = name.lastIndexOf(".");
  return { folders: parts.slice(0, -1).map((p) => p.toLowerCase()), stem: dot > 0 ? name.slice(0, dot) : name,
    suffix: dot > 0 ? name.slice(dot).toLowerCase() : "" };
}

function pairFiles(images, truths) {
  // images, truths: [{file, path}]; a file whose folder is masks/... or whose stem ends with _mask is ground truth
  const pictures = [], masks = [...truths];
  for (const item of images) {
    const { folders, stem } = splitName(item.path);
    const isTruth = folders.some((f) => TRUTH_FOLDERS.includes(f)) || TRUTH_SUFFIXES.some((s) => stem.endsWith(s));
    (isTruth ? masks : pictures).push(item);
  }
  const key = (item) => {
    const { stem } = splitName(item.path);
    const suffix = TRUTH_SUFFIXES.find((s) => stem.endsWith(s));
    return suffix ? stem.slice(0, -suffix.length) : stem;
  };
  const byStem = new Map(masks.map((m) => [key(m), m]));
  const pairs = pictures.map((p) => ({ image: p.file, truth: byStem.get(splitName(p.path).stem)?.file || null }));
  const used = new Set(pairs.map((p) => p.truth).filter(Boolean));
  const unused = masks.filter((m) => !used.has(m.file));
  if (pairs.length === 1 && !pairs[0].truth && unused.length === 1) {  // one image, one mask: a pair whatever the names
    pairs[0].truth = unused.pop().file;
  }
  return { pairs, unused };
}

async function entriesOf(dataTransfer) {
  // files and folders dropped on the page, with their paths within the dropped folders
  const out = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push({ file, path: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files].map((file) => ({ file, path: file.name }));
  for (const entry of entries) await walk(entry, "");
  return out;
}

function isImage(item) {
  return IMAGE_SUFFIXES.includes(splitName(item.path).suffix) || !splitName(item.path).suffix;
}

async function addFiles(items, truthItems = []) {
  showMessage("");
  const { pairs, unused } = pairFiles(items.filter((i) => isImage(i) || !i.path.includes("/")), truthItems);
  if (!pairs.length) {
    showMessage(unused.length ? `${unused.map((u) => u.file.name).join(", ")}: ground truth without an image` :
      "no image files (PNG, JPEG, TIFF) among the files given");
    return;
  }
  if (unused.length) showMessage(`${unused.map((u) => u.file.name).join(", ")}: ground truth without an image of that name`);
  for (const pair of pairs) await startJob(pair.image, pair.truth);
}

function upload(file, onProgress) {
  return api("POST", "/api/uploads", { name: file.name, size: file.size }).then((reserved) => new Promise((ok, fail) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/api/uploads/${reserved.token}`);
    xhr.setRequestHeader("X-Unetkit", "1");
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (err) { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) ok(data);
      else fail(new Error(data && data.error ? data.error : `${file.name}: upload failed (HTTP ${xhr.status})`));
    };
    xhr.onerror = () => fail(new Error(`${file.name}: upload failed (the connection was closed)`));
    xhr.send(file);
  }));
}

// --- jobs ---------------------------------------------------------------------------------------------------

async function startJob(image, truth) {
  const local = { id: `local-${Math.random().toString(36).slice(2)}`, name: image.name, truth: truth && truth.name,
    status: "uploading", done: 0, total: 1, message: "" };
  const item = renderJob(local, null);
  try {
    const imageUpload = await upload(image, (done, total) => updateJob(item, { ...local, done, total }));
    const truthUpload = truth ? await upload(truth, () => {}) : null;
    const job = await api("POST", "/api/jobs", { run: $("run-select").value, image: imageUpload.token,
      truth: truthUpload && truthUpload.token, tta: $("tta").checked, instances: $("instances").value || null });
    item.dataset.id = job.id;
    state.jobs.set(job.id, job);
    updateJob(item, job);
    poll(job.id, item);
  } catch (err) {
    updateJob(item, { ...local, status: "error", message: err.message });
  }
}

function renderJob(job) {
  const item = el("li", { className: "job", dataset: { id: job.id } },
    el("div", { className: "name" }, job.name + (job.truth ? ` + ${job.truth}` : "")),
    el("progress", { max: 1, value: 0 }), el("div", { className: "status" }));
  item.addEventListener("click", () => {
    const current = state.jobs.get(item.dataset.id);
    if (current && current.status === "done") showJob(current);
  });
  $("jobs").prepend(item);
  updateJob(item, job);
  return item;
}

function updateJob(item, job) {
  const status = item.querySelector(".status"), bar = item.querySelector("progress");
  item.classList.toggle("error", job.status === "error");
  item.dataset.status = job.status;
  bar.hidden = job.status === "done" || job.status === "error";
  bar.max = Math.max(1, job.total);
  bar.value = job.done;
  const share = job.total ? ` ${job.done}/${job.total}` : "";
  const words = { uploading: "uploading", queued: "waiting", predicting: `predicting: tiles${share}`,
    scoring: "scoring against the ground truth", drawing: `preparing the view: bands${share}`,
    done: `done in ${(job.seconds || 0).toFixed(1)} s`, error: job.message };
  status.textContent = words[job.status] || job.status;
}

async function poll(id, item) {
  for (;;) {
    const job = await api("GET", `/api/jobs/${id}`);
    state.jobs.set(id, job);
    updateJob(item, job);
    if (job.status === "done") {
      if (!state.current || state.current.status !== "done" || state.autoFollow) showJob(job);
      return;
    }
    if (job.status === "error") return;
    await new Promise((ok) => setTimeout(ok, 250));
  }
}

// --- the viewer: a pyramid of tiles, zoom and pan ----------------------------------------------------------

const viewer = { scale: 1, ox: 0, oy: 0, tiles: new Map(), drag: null, frame: 0 };

function showJob(job) {
  state.current = job;
  for (const li of document.querySelectorAll(".job")) li.classList.toggle("selected", li.dataset.id === job.id);
  const view = job.view;
  $("placeholder").hidden = true;
  $("overlay-errors").disabled = !view.layers.includes("truth");
  if ($("overlay-errors").disabled && $("overlay-errors").checked) document.querySelector("input[value=mask]").checked = true;
  if (view.layers.includes("truth") && !state.viewedTruth) { $("overlay-errors").checked = true; state.viewedTruth = true; }
  $("outlines").disabled = !view.layers.includes("instances");
  $("outlines").checked = view.layers.includes("instances");
  const probClass = $("prob-class");
  probClass.replaceChildren(...Array.from({ length: view.num_classes - 1 }, (_, i) => el("option", { value: i + 1 }, `class ${i + 1}`)));
  probClass.hidden = view.num_classes <= 2;
  renderLegend();
  renderDownloads(job);
  renderMetrics(job);
  fit();
}

function layersShown() {
  const job = state.current, view = job.view, overlay = document.querySelector("input[name=overlay]:checked").value;
  const alpha = Number($("opacity").value), layers = [["image", 1, ""]];
  if (overlay === "mask") layers.push(["mask", alpha, ""]);
  if (overlay === "errors" && view.layers.includes("truth")) layers.push(["errors", alpha, ""]);
  if (overlay === "probs") layers.push(["probs", alpha, `?class=${$("prob-class").value || 1}`]);
  if ($("outlines").checked && view.layers.includes("instances")) layers.push(["outlines", 1, ""]);
  return layers;
}

function tileUrl(layer, query, level, ty, tx) {
  return `/api/jobs/${state.current.id}/tiles/${layer}/${level}/${ty}/${tx}${query}`;
}

function tileImage(layer, query, level, ty, tx) {
  const url = tileUrl(layer, query, level, ty, tx);
  let image = viewer.tiles.get(url);
  if (!image) {
    image = new Image();
    image.onload = requestDraw;
    image.onerror = requestDraw;
    image.src = url;
    viewer.tiles.set(url, image);
    if (viewer.tiles.size > 1500) viewer.tiles.delete(viewer.tiles.keys().next().value);
  }
  return image;
}

function ready(image) { return image.complete && image.naturalWidth > 0; }

function canvasSize() {
  const canvas = $("view"), ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio), height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  return { width: canvas.clientWidth, height: canvas.clientHeight, ratio };
}

function requestDraw() {
  if (!viewer.frame) viewer.frame = requestAnimationFrame(() => { viewer.frame = 0; draw(); });
}

function draw() {
  const canvas = $("view"), ctx = canvas.getContext("2d"), { width, height, ratio } = canvasSize();
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#20242a";
  ctx.fillRect(0, 0, width, height);
  const job = state.current;
  if (!job || !job.view) { canvas.dataset.ready = "0"; return; }
  const view = job.view, T = view.tile, s = viewer.scale;
  const level = Math.max(0, Math.min(view.levels - 1, Math.floor(Math.log2(1 / s) + 1e-9)));
  const f = 2 ** level, lw = Math.ceil(view.width / f), lh = Math.ceil(view.height / f), span = T * f;
  const tx0 = Math.max(0, Math.floor(viewer.ox / span)), ty0 = Math.max(0, Math.floor(viewer.oy / span));
  const tx1 = Math.min(Math.ceil(lw / T) - 1, Math.floor((viewer.ox + width / s) / span));
  const ty1 = Math.min(Math.ceil(lh / T) - 1, Math.floor((viewer.oy + height / s) / span));
  ctx.imageSmoothingEnabled = s < 1;
  let pending = 0;
  for (const [layer, alpha, query] of layersShown()) {
    ctx.globalAlpha = alpha;
    for (let ty = ty0; ty <= ty1; ty++) {
      for (let tx = tx0; tx <= tx1; tx++) {
        const tw = Math.min(T, lw - tx * T), th = Math.min(T, lh - ty * T);
        const dx = (tx * span - viewer.ox) * s, dy = (ty * span - viewer.oy) * s, dw = tw * f * s, dh = th * f * s;
        const image = tileImage(layer, query, level, ty, tx);
        if (ready(image)) { ctx.drawImage(image, dx, dy, dw, dh); continue; }
        if (!image.complete) pending++;
        for (let up = level + 1; up < view.levels; up++) {  // meanwhile, a coarser tile already loaded
          const d = up - level, parent = viewer.tiles.get(tileUrl(layer, query, up, ty >> d, tx >> d));
          if (!parent || !ready(parent)) continue;
          const sx = (tx * T) / 2 ** d - (tx >> d) * T, sy = (ty * T) / 2 ** d - (ty >> d) * T;
          ctx.drawImage(parent, sx, sy, tw / 2 ** d, th / 2 ** d, dx, dy, dw, dh);
          break;
        }
      }
    }
  }
  ctx.globalAlpha = 1;
  canvas.dataset.ready = pending ? "0" : "1";
  canvas.dataset.level = String(level);
  canvas.dataset.job = job.id;
  $("zoom-label").textContent = `${(s * 100).toFixed(s < 0.1 ? 1 : 0)} %, level ${level} of ${view.levels - 1}, ` +
    `${view.width} x ${view.height} px`;
}

function fit() {
  const view = state.current && state.current.view;
  if (!view) return;
  const { width, height } = canvasSize();
  viewer.scale = Math.min(width / view.width, height / view.height);
  viewer.ox = (view.width - width / viewer.scale) / 2;
  viewer.oy = (view.height - height / viewer.scale) / 2;
  requestDraw();
}

function zoomAt(factor, mx, my) {
  const view = state.current && state.current.view;
  if (!view) return;
  const { width, height } = canvasSize();
  const least = Math.min(width / view.width, height / view.height) / 4;
  const next = Math.max(least, Math.min(32, viewer.scale * factor));
  const ix = viewer.ox + mx / viewer.scale, iy = viewer.oy + my / viewer.scale;
  viewer.scale = next;
  viewer.ox = ix - mx / next;
  viewer.oy = iy - my / next;
  requestDraw();
}

function renderLegend() {
  const view = state.current.view, overlay = document.querySelector("input[name=overlay]:checked").value, items = [];
  if (overlay === "mask") {
    for (let k = 1; k < view.num_classes; k++) {
      const [r, g, b] = view.colours[k];
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = `rgb(${r},${g},${b})`;
      items.push(el("span", {}, swatch, `class ${k}`));
    }
  } else if (overlay === "errors") {
    for (const [name, colour] of ERROR_COLOURS) {
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = colour;
      items.push(el("span", {}, swatch, name));
    }
  } else if (overlay === "probs") {
    const ramp = el("span", { className: "ramp" });
    ramp.style.background = "linear-gradient(to right, #440154, #3b528b, #21918c, #5ec962, #fde725)";
    items.push(el("span", {}, "0 ", ramp, " 1"));
  }
  if ($("outlines").checked) {
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = "rgb(255,220,0)";
    items.push(el("span", {}, swatch, "instance outlines"));
  }
  $("legend").replaceChildren(...items);
}

function renderDownloads(job) {
  const words = { mask: "mask", probs: "probabilities", instances: "instances" };
  $("downloads").replaceChildren(...Object.entries(job.downloads).map(([kind, name]) =>
    el("a", { id: `download-${kind}`, href: `/api/jobs/${job.id}/files/${kind}`, download: name }, `${words[kind] || kind} (${name})`)));
}

function format(value, count) {
  // as `unetkit evaluate` prints: scores to 4 decimals, counts (the server names them) whole
  if (value === null || value === undefined) return "-";
  return count ? String(value) : value.toFixed(4);
}

function renderMetrics(job) {
  const box = $("metrics-box"), table = $("metrics");
  box.hidden = !job.metrics;
  if (!job.metrics) return;
  $("metrics-command").textContent = `(as unetkit evaluate ${job.downloads.mask} ${job.truth}${job.instances ? " --instances" : ""})`;
  const rows = [el("tr", {}, el("th", {}, "metric"), el("th", {}, "value"))];
  for (const [key, value] of Object.entries(job.metrics)) {
    if (key === "name" || key === "per_class") continue;
    rows.push(el("tr", {}, el("td", {}, key), el("td", { className: "num", dataset: { key } }, format(value, job.counts.includes(key)))));
  }
  for (const [cls, scores] of Object.entries(job.metrics.per_class || {})) {
    for (const [key, value] of Object.entries(scores)) {
      rows.push(el("tr", {}, el("td", {}, `class ${cls} ${key}`), el("td", { className: "num", dataset: { key: `${key}_class${cls}` } }, format(value))));
    }
  }
  table.replaceChildren(...rows);
}

function setupViewer() {
  const canvas = $("view");
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });
  canvas.addEventListener("pointerdown", (e) => {
    viewer.drag = { x: e.clientX, y: e.clientY };
    canvas.setPointerCapture(e.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!viewer.drag) return;
    viewer.ox -= (e.clientX - viewer.drag.x) / viewer.scale;
    viewer.oy -= (e.clientY - viewer.drag.y) / viewer.scale;
    viewer.drag = { x: e.clientX, y: e.clientY };
    requestDraw();
  });
  const stop = () => { viewer.drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  canvas.addEventListener("dblclick", (e) => {
    const rect = canvas.getBoundingClientRect();
    zoomAt(2, e.clientX - rect.left, e.clientY - rect.top);
  });
  const centre = () => { const { width, height } = canvasSize(); return [width / 2, height / 2]; };
  $("zoom-in").addEventListener("click", () => zoomAt(2, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(0.5, ...centre()));
  $("zoom-fit").addEventListener("click", fit);
  $("zoom-one").addEventListener("click", () => zoomAt(1 / viewer.scale, ...centre()));
  for (const input of document.querySelectorAll("input[name=overlay], #outlines, #prob-class")) {
    input.addEventListener("change", () => { if (state.current) { renderLegend(); requestDraw(); } });
  }
  $("opacity").addEventListener("input", requestDraw);
  window.addEventListener("resize", requestDraw);
}

function setupDrop() {
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    addFiles(await entriesOf(e.dataTransfer));
  });
  const listed = (input, relative) => [...input.files].map((file) => ({ file, path: relative ? file.webkitRelativePath || file.name : file.name }));
  $("file-input").addEventListener("change", () => {
    const truths = listed($("gt-input"), false);
    addFiles(listed($("file-input"), false), truths);
    $("file-input").value = "";
    $("gt-input").value = "";
  });
  $("folder-input").addEventListener("change", () => { addFiles(listed($("folder-input"), true)); $("folder-input").value = ""; });
}

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
    root.append(svg("text", { x: W - R - 120, y: 14 + i * 13, fill: s.colour }, s.name));
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

// --- start ------------------------------------------------------------------------------------------------

function showTab(name) {
  $("predict-view").hidden = name !== "predict";
  $("runs-view").hidden = name !== "runs";
  $("tab-predict").classList.toggle("active", name === "predict");
  $("tab-runs").classList.toggle("active", name === "runs");
  if (name === "predict") requestDraw();
}

async function start() {
  state.info = await api("GET", "/api/info");
  $("root").textContent = state.info.root;
  $("run-select").replaceChildren(...state.info.runs.map((name) => el("option", { value: name }, name)));
  $("instances").value = state.info.instances || "";
  $("tab-predict").addEventListener("click", () => showTab("predict"));
  $("tab-runs").addEventListener("click", () => showTab("runs"));
  setupViewer();
  setupDrop();
  requestDraw();
  await loadRuns();
  document.body.dataset.loaded = "1";
}

start().catch((err) => showMessage(err.message));
