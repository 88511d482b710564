// The litefer page: webcam or image in, faces with expression labels and per-class score bars out.
// Two modes: "server" sends each frame to POST /v1/recognize; "device" runs everything in this tab
// (the server's face detector, YuNet in onnxruntime-web or Haar in opencv.js, and the model in
// onnxruntime-web, see pipeline.js).
import { CAM_OUTPUT, DeviceRecognizer, HaarDetector, YuNetDetector, cropToImage, heatPixels } from "./pipeline.js";
import { LiveTimeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const video = $("video"), still = $("still"), overlay = $("overlay"), heat = $("heat");
const MAX_FRAME_SIDE = 640;            // webcam frames are analysed at most this large, in both modes
const COLORS = ["#e6e6e6", "#ffd33d", "#79c0ff", "#8b949e", "#ff7b72", "#7ee787", "#d2a8ff", "#ffa657",
                "#56d4dd", "#f778ba"];

const state = {
  mode: "server",            // "server" | "device"
  prior: "dataset",          // "dataset" | "balanced:0.5" | "balanced": the scores' class prior, in both modes (set from /v1/model)
  explain: false,            // the Explain toggle: each face's Grad-CAM map drawn over it
  source: null,              // "webcam" | "image" | null
  running: false,
  card: null,
  device: null,              // DeviceRecognizer once loaded
  deviceLoading: null,
  frames: { server: 0, device: 0 },
  facesSeen: { server: 0, device: 0 },
  lastFaces: [],
  lastMode: null,
  lastPrior: null,
  timeline: null,            // LiveTimeline: a track per webcam face and its smoothed scores (timeline.js)
  fps: 0,
  latencyMs: 0,
  error: null,
};
window.litefer = { state };    // for the browser test and for curious developers
window.liteferExplanations = [];   // per face of the last frame: {label, cam: h x w rows}, while Explain is on

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) state.error = text;
}

// ---------------------------------------------------------------------------- loading

async function fetchJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body && body.message ? body.message : `${url}: HTTP ${r.status}`);
  return body;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(el);
  });
}

async function loadOpenCV(src) {
  await loadScript(src);
  const ready = (m) => m && m.Mat && m.CascadeClassifier;
  // opencv.js's module object has a then() that hands over the module itself, which is thenable
  // again: awaiting it (or returning it from an async function) never settles. So it is taken
  // through a plain callback, and handed back wrapped in an object.
  let resolved = null;
  if (window.cv && typeof window.cv.then === "function") window.cv.then((m) => { resolved = m; });
  const t0 = performance.now();
  while (!ready(resolved) && !ready(window.cv)) {                     // wait for the WebAssembly runtime
    if (performance.now() - t0 > 120000) throw new Error("opencv.js did not initialise within 120 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  return { cv: ready(resolved) ? resolved : window.cv };
}

async function fetchBytes(url, what) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${what}: HTTP ${r.status}`);
  return r.arrayBuffer();
}

// The server's face detector: YuNet, from the model file the server detects with (GET /v1/detector.onnx)
// run in onnxruntime-web, or Haar, from the cascades in opencv.js. When the YuNet file cannot be loaded
// the page falls back to Haar (settings.fallback) and says so.
async function loadDetector(cv, ort, settings) {
  let note = "";
  if (settings.name === "yunet") {
    try {
      const session = await ort.InferenceSession.create(await fetchBytes(settings.url, "YuNet model"),
                                                        { executionProviders: ["wasm"] });
      return { detector: new YuNetDetector(cv, ort, session, settings), note };
    } catch (e) {
      console.warn(`on-device YuNet unavailable (${e.message}); detecting with Haar`);
      note = ` (YuNet unavailable: ${e.message}; Haar instead)`;
      settings = settings.fallback;
    }
  }
  const [faceXml, eyeXml] = await Promise.all([fetchBytes(settings.face_cascade, "face cascade"),
                                               fetchBytes(settings.eye_cascade, "eye cascade")]);
  return { detector: new HaarDetector(cv, settings, faceXml, eyeXml), note };
}

async function loadDevice() {
  const card = state.card, b = card.browser;
  if (!b.available) throw new Error(`on-device mode unavailable: ${b.missing_hint}`);
  const base = "/static/vendor/";
  setStatus("on-device: loading onnxruntime-web, opencv.js, the model and the face detector…");
  const t0 = performance.now();
  const [, { cv }, modelBytes] = await Promise.all([
    loadScript(base + b.vendor.scripts.ort),
    loadOpenCV(base + b.vendor.scripts.opencv),
    fetchBytes(b.onnx_url, "model"),
  ]);
  const ort = window.ort;
  ort.env.wasm.wasmPaths = base + b.vendor.scripts.ort_wasm_dir;
  ort.env.wasm.numThreads = 1;          // threads need cross-origin isolation; one is enough for 64 px faces
  const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ["wasm"] });
  const { detector, note } = await loadDetector(cv, ort, b.detector);
  const rec = new DeviceRecognizer(cv, ort, session, card, detector);
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  setStatus(`on-device ready in ${secs} s: ${DETECTOR_NAMES[detector.name]} faces${note}, ` +
            `onnxruntime-web ${b.vendor.packages["onnxruntime-web"]}, opencv.js ${b.vendor.packages["@techstark/opencv-js"]}`);
  return rec;
}

const DETECTOR_NAMES = { haar: "Haar", yunet: "YuNet" };

function ensureDevice() {
  if (!state.deviceLoading) {
    state.deviceLoading = loadDevice().then((rec) => { state.device = rec; return rec; })
      .catch((e) => { state.deviceLoading = null; throw e; });
  }
  return state.deviceLoading;
}

// ---------------------------------------------------------------------------- recognition

// A canvas holding `source` (video or image) scaled so its longer side is at most maxSide.
function grab(source, width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(width * scale));
  c.height = Math.max(1, Math.round(height * scale));
  c.getContext("2d", { willReadFrequently: true }).drawImage(source, 0, 0, c.width, c.height);
  return { canvas: c, scale };
}

async function recognizeOnServer(body, contentType, explain) {
  const url = `/v1/recognize?prior=${encodeURIComponent(state.prior)}${explain ? "&explain=1" : ""}`;
  const r = await fetch(url, { method: "POST", body, headers: { "Content-Type": contentType } });
  const out = await r.json().catch(() => ({ message: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(`server: ${out.message || r.status}`);
  if (explain) {                   // each face's map comes as a PNG covering `rect` of the photo
    await Promise.all(out.faces.filter((f) => f.explanation && f.explanation.png).map(async (f) => {
      const png = await (await fetch(`data:image/png;base64,${f.explanation.png}`)).blob();
      f.explanation.image = await createImageBitmap(png);
    }));
  }
  return out.faces;
}

async function recognizeCanvas(canvas, explain) {
  if (state.mode === "server") {
    const blob = await new Promise((res) => canvas.toBlob(res, "image/jpeg", 0.9));
    return recognizeOnServer(blob, "image/jpeg", explain);
  }
  const rec = state.device || await ensureDevice();
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  return rec.recognize(ctx.getImageData(0, 0, canvas.width, canvas.height), state.prior, explain && rec.canExplain);
}

// The raw map as rows, from the page's flat Float32Array or the server's nested list.
function camRows(e) {
  if (!ArrayBuffer.isView(e.cam)) return e.cam;
  const [h, w] = e.resolution;
  return Array.from({ length: h }, (_, y) => Array.from(e.cam.subarray(y * w, (y + 1) * w)));
}

function record(faces, mode, ms, prior) {
  state.frames[mode] += 1;
  state.lastPrior = prior;
  window.liteferExplanations = faces.filter((f) => f.explanation)
    .map((f) => ({ label: f.explanation.label, cam: camRows(f.explanation) }));
  if (faces.length) state.facesSeen[mode] += 1;
  state.lastFaces = faces;
  state.lastMode = mode;
  state.latencyMs = ms;
  document.body.dataset.frames = String(state.frames.server + state.frames.device);
}

// ---------------------------------------------------------------------------- drawing

// Each face's map over the face, on its own canvas under the boxes. On-device: the crop-aligned map
// in heat colours, drawn through the inverse of the crop's warp (so a levelled crop lands on the tilted
// face); server: the PNG the server made, at its rectangle. `scale`: analysed pixels per shown pixel.
function drawExplanations(faces, scale, width, height) {
  heat.width = width;
  heat.height = height;
  const g = heat.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.imageSmoothingEnabled = true;
  faces.forEach((f) => {
    const e = f.explanation;
    if (!e) return;
    if (e.rect) {                  // the server's (an empty rect, face outside the photo, has no image)
      const [x, y, w, h] = e.rect.map((v) => v / scale);
      if (e.image) g.drawImage(e.image, x, y, w, h);
      return;
    }
    const tile = document.createElement("canvas");
    tile.width = tile.height = e.side;
    tile.getContext("2d").putImageData(new ImageData(heatPixels(e.map), e.side, e.side), 0, 0);
    g.setTransform(...cropToImage(e.matrix, scale));
    g.drawImage(tile, 0, 0);
    g.setTransform(1, 0, 0, 1, 0, 0);
  });
}

function drawFaces(faces, scale, width, height) {
  drawExplanations(faces, scale, width, height);
  overlay.width = width;
  overlay.height = height;
  const g = overlay.getContext("2d");
  g.clearRect(0, 0, width, height);
  const classes = state.card.class_names;
  const unit = Math.max(1, Math.min(width, height) / 480);
  faces.forEach((f) => {
    const [x, y, w, h] = f.box.map((v) => v / scale);
    const color = COLORS[classes.indexOf(f.label) % COLORS.length];
    g.lineWidth = 3 * unit;
    g.strokeStyle = color;
    g.strokeRect(x, y, w, h);
    g.font = `bold ${Math.round(16 * unit)}px system-ui, sans-serif`;
    const title = `${f.label} ${(100 * f.score).toFixed(0)}%`;
    const tw = g.measureText(title).width + 8 * unit;
    g.fillStyle = color;
    g.fillRect(x, Math.max(0, y - 22 * unit), tw, 22 * unit);
    g.fillStyle = "#111";
    g.fillText(title, x + 4 * unit, Math.max(0, y - 22 * unit) + 16 * unit);
    // per-class score bars beside the box (left of it when there is no room on the right)
    const rowH = 13 * unit, barW = 70 * unit, labelW = 64 * unit;
    const panelW = labelW + barW + 8 * unit, panelH = classes.length * rowH + 6 * unit;
    let px = x + w + 6 * unit;
    if (px + panelW > width) px = Math.max(0, x - panelW - 6 * unit);
    const py = Math.min(Math.max(0, y), Math.max(0, height - panelH));
    g.fillStyle = "rgba(0, 0, 0, 0.6)";
    g.fillRect(px, py, panelW, panelH);
    g.font = `${Math.round(11 * unit)}px system-ui, sans-serif`;
    classes.forEach((name, j) => {
      const p = f.scores[name] || 0, ry = py + 3 * unit + j * rowH;
      g.fillStyle = "#ddd";
      g.fillText(name, px + 4 * unit, ry + rowH - 3 * unit);
      g.fillStyle = COLORS[j % COLORS.length];
      g.fillRect(px + labelW, ry + 2 * unit, Math.max(1, barW * p), rowH - 4 * unit);
    });
  });
  renderList(faces);
}

function renderList(faces) {
  const list = $("faces");
  list.replaceChildren(...faces.map((f, i) => {
    const li = document.createElement("li");
    li.className = "face";
    const head = document.createElement("div");
    head.className = "head";
    head.innerHTML = `<span class="label"></span> <span class="score"></span> <span class="box"></span>`;
    head.querySelector(".label").textContent = f.label;
    head.querySelector(".score").textContent = `${(100 * f.score).toFixed(1)}%`;
    head.querySelector(".box").textContent = `face ${i + 1} at ${f.box.join(", ")}`;
    li.appendChild(head);
    state.card.class_names.forEach((name, j) => {
      const row = document.createElement("div");
      row.className = "bar";
      const p = f.scores[name] || 0;
      row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
      row.querySelector(".name").textContent = name;
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      row.querySelector(".fill").style.background = COLORS[j % COLORS.length];
      row.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
      li.appendChild(row);
    });
    return li;
  }));
  $("nofaces").hidden = faces.length > 0;
}

// The live timeline under the video: the frame's faces join their tracks (t: when the frame was grabbed).
function showTimeline(faces, t) {
  state.timeline.update(faces, t);
  $("timeline-box").hidden = false;
  state.timeline.draw($("timeline"), COLORS, t);
  $("timeline-legend").replaceChildren(...state.card.class_names.map((name, j) => {
    const s = document.createElement("span");
    s.textContent = `■ ${name} `;
    s.style.color = COLORS[j % COLORS.length];
    return s;
  }));
}

function showRates() {
  $("fps").textContent = state.source === "webcam" ? `${state.fps.toFixed(1)} fps` : "– fps";
  $("latency").textContent = `${state.latencyMs.toFixed(0)} ms/frame (${state.mode === "server" ? "server" : "on-device"})`;
}

// ---------------------------------------------------------------------------- webcam loop

let loopToken = 0;

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives no camera access here: open the page as http://localhost:PORT or over https", true);
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    video.srcObject = stream;
    await video.play();
  } catch (e) {
    setStatus(`camera: ${e.message}`, true);
    return;
  }
  still.hidden = true;
  video.hidden = false;
  state.source = "webcam";
  state.timeline.reset();
  state.running = true;
  $("start").disabled = true;
  $("stop").disabled = false;
  runLoop(++loopToken);
}

function stopWebcam() {
  state.running = false;
  loopToken++;
  if (video.srcObject) video.srcObject.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  state.source = null;
  showRates();
}

async function runLoop(token) {
  let last = performance.now();
  while (state.running && token === loopToken) {
    if (video.readyState < 2 || !video.videoWidth) {
      await new Promise((r) => setTimeout(r, 30));
      continue;
    }
    const mode = state.mode, prior = state.prior, explain = state.explain;
    const t0 = performance.now();
    try {
      const { canvas, scale } = grab(video, video.videoWidth, video.videoHeight, MAX_FRAME_SIDE);
      const faces = await recognizeCanvas(canvas, explain);
      if (token !== loopToken || mode !== state.mode || prior !== state.prior || explain !== state.explain) continue;
      record(faces, mode, performance.now() - t0, prior);
      drawFaces(faces, scale, video.videoWidth, video.videoHeight);
      showTimeline(faces, t0 / 1000);
      const now = performance.now();
      const inst = 1000 / Math.max(1, now - last);
      last = now;
      state.fps = state.fps ? 0.8 * state.fps + 0.2 * inst : inst;
      showRates();
      if ($("status").classList.contains("error")) setStatus(`${mode === "server" ? "server" : "on-device"}: running again`);
    } catch (e) {
      setStatus(e.message, true);
      await new Promise((r) => setTimeout(r, 1000));
    }
    await new Promise((r) => requestAnimationFrame(() => r()));
  }
}

// ---------------------------------------------------------------------------- image files

let fileToken = 0;      // the latest image analysis: an earlier one still running (a mode, prior or Explain
                        // change re-analyses the picked image) must not draw over it

async function analyseFile(file) {
  if (!file) return;
  const token = ++fileToken;
  stopWebcam();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);       // EXIF orientation applied, as the server does
  } catch (e) {
    setStatus(`${file.name}: not an image this browser can decode`, true);
    return;
  }
  if (token !== fileToken) return;
  still.width = bitmap.width;
  still.height = bitmap.height;
  still.getContext("2d", { willReadFrequently: true }).drawImage(bitmap, 0, 0);
  video.hidden = true;
  still.hidden = false;
  $("timeline-box").hidden = true;           // a photo has no time: the timeline is the webcam's
  state.source = "image";
  const mode = state.mode, prior = state.prior, explain = state.explain, t0 = performance.now();
  try {
    // server: the original file (the server decodes it); device: the decoded pixels at full size
    const faces = mode === "server" ? await recognizeOnServer(file, file.type || "application/octet-stream", explain)
                                    : await recognizeCanvas(still, explain);
    if (token !== fileToken) return;
    record(faces, mode, performance.now() - t0, prior);
    drawFaces(faces, 1, bitmap.width, bitmap.height);
    showRates();
    setStatus(`${file.name}: ${faces.length} face(s), ${mode === "server" ? "on the server" : "on-device"}`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

// ---------------------------------------------------------------------------- start up

async function setMode(mode) {
  state.mode = mode;
  state.error = null;
  updateModeNote();
  if (mode === "device") {
    try {
      await ensureDevice();
      updateModeNote();
    } catch (e) {
      setStatus(e.message, true);
    }
  } else {
    setStatus(`server mode: ${state.card.model_name} (${state.card.server.backend}) on the server`);
  }
  updateExplain();
  if (state.source === "image" && $("file").files[0]) analyseFile($("file").files[0]);
}

// The note under the faces: what runs where; on-device, the detector the page loaded (the server's
// YuNet model in onnxruntime-web, or its Haar cascades in opencv.js).
function updateModeNote() {
  const yunet = state.device ? state.device.detector.name === "yunet" : state.card.browser.detector.name === "yunet";
  const faces = yunet
    ? "Faces are found by YuNet (the server's own detector model file, with its thresholds, run by onnxruntime-web) " +
      "and framed by their five landmarks"
    : "Faces are found by OpenCV's Haar cascade (the same cascade file and settings as the server's Haar detector, " +
      "run by opencv.js)";
  $("mode-note").textContent = state.mode === "server"
    ? "Server mode: each frame is sent as a JPEG to POST /v1/recognize; detection and the model run on the server."
    : `On-device mode: nothing leaves this tab. ${faces} and classified by the same ONNX model in onnxruntime-web ` +
      "(WebAssembly), with the model card's crop and preprocessing. A large image is searched once, downscaled to " +
      "the detector's max_side (the server also searches tiles of it for small faces).";
}

// The selector's explanation, with the training class balance read from the model card.
function priorNote(c, prior) {
  if (prior === "balanced") {
    return "Balanced: the training set's class frequencies are divided out of the scores, as if every expression " +
           "were equally common (fairer to rare classes, less accurate on data balanced like the training set).";
  }
  if (prior.startsWith("balanced:")) {
    return `Half balanced (the default): ${prior.slice(9)} of the balanced adjustment, the training set's class ` +
           "frequencies partly divided out (rare expressions named more often, within a point of the model's own " +
           "accuracy on data balanced like the training set).";
  }
  if (!c.class_prior) return "Dataset: the model's own probabilities.";
  const top = Object.entries(c.class_prior).sort((a, b) => b[1] - a[1]).slice(0, 2)
    .map(([name, f]) => `${(100 * f).toFixed(0)} % ${name}`).join(", ");
  return `Dataset: the model's own probabilities, which carry its training set's class balance (${top}, ...).`;
}

function setupPrior(c) {
  const select = $("prior");
  for (const option of select.options) option.disabled = !c.priors.includes(option.value);
  if (!c.class_prior) select.title = "the model stores no training class prior";
  state.prior = select.value = c.default_prior;
  $("prior-note").textContent = priorNote(c, state.prior);
  select.addEventListener("change", () => {
    state.prior = select.value;
    $("prior-note").textContent = priorNote(c, state.prior);
    if (state.source === "image" && $("file").files[0]) analyseFile($("file").files[0]);
  });
}

// The Explain toggle is on unless the on-device model has no Grad-CAM output; the note says which map it is.
function updateExplain() {
  const toggle = $("explain-toggle"), note = $("explain-note");
  const unable = state.mode === "device" && state.device && !state.device.canExplain;
  toggle.disabled = Boolean(unable);
  state.explain = toggle.checked && !unable;
  note.classList.toggle("warn", Boolean(unable));
  if (unable) {
    const code = (text) => Object.assign(document.createElement("code"), { textContent: text });
    note.replaceChildren(`Explain is unavailable on this device: the page's ONNX model has no "${CAM_OUTPUT}" output. ` +
      "Export one with ", code("litefer export --weights W --explain"), " and serve it (",
      code("litefer serve --weights W.onnx"), " or ", code("--browser-model W.onnx"), ").");
  } else {
    note.textContent = state.explain ? "Explain: each face's map shows where the network looked for its label " +
      "(Grad-CAM of the label on the last feature map, upsampled; from faint blue to opaque red = more weight)." : "";
  }
}

function setupExplain() {
  $("explain-toggle").addEventListener("change", () => {
    updateExplain();
    if (!state.explain) window.liteferExplanations = [];
    if (state.source === "image" && $("file").files[0]) analyseFile($("file").files[0]);
  });
  updateExplain();
}

async function main() {
  try {
    state.card = await fetchJSON("/v1/model");
  } catch (e) {
    setStatus(`cannot read the model card: ${e.message}`, true);
    return;
  }
  const c = state.card;
  $("model-info").textContent = `${c.model_name} · ${c.class_names.length} classes · ` +
    `${c.crop.size}px ${c.crop.grayscale ? "grey" : "colour"} crop → ${c.preprocess.input_size}px input` +
    (c.tta_flip ? " · flip TTA" : "");
  document.querySelectorAll("input[name=mode]").forEach((el) => {
    el.addEventListener("change", () => { if (el.checked) setMode(el.value); });
    if (el.value === "device" && !c.browser.available) {
      el.disabled = true;
      el.parentElement.title = c.browser.missing_hint;
    }
  });
  state.timeline = new LiveTimeline(c.class_names, { smoothS: c.timeline.smooth_s, historyS: c.timeline.history_s });
  setupPrior(c);
  setupExplain();
  $("start").addEventListener("click", startWebcam);
  $("stop").addEventListener("click", stopWebcam);
  $("file").addEventListener("change", () => analyseFile($("file").files[0]));
  const requested = new URLSearchParams(location.search).get("mode");
  const initial = requested === "device" && c.browser.available ? "device" : "server";
  document.querySelector(`input[name=mode][value=${initial}]`).checked = true;
  await setMode(initial);
  document.body.dataset.ready = "1";
}

main();
