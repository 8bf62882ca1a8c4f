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
  const words = { uploading: "uploading", queued: "waiting",
    predicting: job.total ? `predicting: tiles${share}` : "predicting: reading the model and the image",
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
