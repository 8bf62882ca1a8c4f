// The page's viewer (loaded before app.js, sharing its globals): a pyramid of tiles drawn on a canvas, zoom
// and pan, the legend, downloads and the metrics table of the job shown.
"use strict";

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
  canvas.dataset.frame = String(Number(canvas.dataset.frame || 0) + 1);  // tests wait for the next drawing
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

