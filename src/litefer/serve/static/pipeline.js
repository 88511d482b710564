// The on-device pipeline of the litefer page: the same steps as the Python recognizer
// (litefer.inference.detect's HaarDetector or YuNetDetector, litefer.inference.align.crop_face,
// litefer.preprocess.Preprocess), written against opencv.js (`cv`) and onnxruntime-web (`ort`), which the
// caller passes in. Every number that describes the model (crop size, grayscale, input size, mean, std,
// TTA, classes) and the detector settings come from the server's GET /v1/model; nothing about the model
// is fixed here. tests/test_serve_browser.py checks detection, crops, tensors and scores against Python.

// Python's round(): halves go to the even neighbour (Math.round would send them up).
export function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------- preprocessing

// Source indices and weights of PyTorch's bilinear resize (align_corners=False, no antialias),
// as backends._bilinear_weights computes them.
export function bilinearWeights(nIn, nOut) {
  const i0 = new Int32Array(nOut), i1 = new Int32Array(nOut), w1 = new Float32Array(nOut);
  for (let o = 0; o < nOut; o++) {
    const src = Math.max((o + 0.5) * (nIn / nOut) - 0.5, 0);
    const a = Math.min(Math.floor(src), nIn - 1);
    i0[o] = a;
    i1[o] = Math.min(a + 1, nIn - 1);
    w1[o] = src - a;
  }
  return { i0, i1, w1 };
}

function channelStats(values, k) {
  if (k === values.length) return values.slice(0, k);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return [mean];
}

// uint8 crops -> float32 N x C x S x S model input, as litefer.preprocess.Preprocess: scale to [0, 1], grey from
// RGB (BT.601) for 1-channel models, bilinear resize to pp.input_size, grey replicated to 3
// channels, (x - mean) / std. `crops` is an array of {data: Uint8Array (H*W*C, interleaved), height,
// width, channels}. Arithmetic is rounded to float32 at the same points as NumPy's.
export function preprocess(crops, pp) {
  const inChans = Number(pp.in_chans), size = Number(pp.input_size);
  const f = Math.fround;
  const n = crops.length;
  const out = new Float32Array(n * inChans * size * size);
  crops.forEach((crop, ci) => {
    const { data, height: h, width: w, channels: c } = crop;
    if (data.length !== h * w * c) throw new Error(`crop ${ci}: ${data.length} bytes for ${w}x${h}x${c}`);
    let planes;                                  // float32 planes, H*W each
    if (c === inChans || (c === 1 && inChans === 3)) {
      planes = [];
      for (let k = 0; k < c; k++) {
        const p = new Float32Array(h * w);
        for (let i = 0; i < h * w; i++) p[i] = data[i * c + k] / 255;
        planes.push(p);
      }
    } else if (c === 3 && inChans === 1) {
      const wr = f(0.299), wg = f(0.587), wb = f(0.114);
      const p = new Float32Array(h * w);
      for (let i = 0; i < h * w; i++) {
        const r = f(data[i * 3] / 255), g = f(data[i * 3 + 1] / 255), b = f(data[i * 3 + 2] / 255);
        p[i] = f(f(f(r * wr) + f(g * wg)) + f(b * wb));
      }
      planes = [p];
    } else {
      throw new Error(`cannot map ${c}-channel crops to a ${inChans}-channel model`);
    }
    if (h !== size || w !== size) {
      const rows = bilinearWeights(h, size), cols = bilinearWeights(w, size);
      planes = planes.map((p) => {
        const tmp = new Float32Array(size * w);      // rows first, as NumPy does
        for (let y = 0; y < size; y++) {
          const a = rows.i0[y] * w, b = rows.i1[y] * w, wy = rows.w1[y], wy0 = f(1 - wy);
          for (let x = 0; x < w; x++) tmp[y * w + x] = f(f(p[a + x] * wy0) + f(p[b + x] * wy));
        }
        const res = new Float32Array(size * size);
        for (let y = 0; y < size; y++) {
          for (let x = 0; x < size; x++) {
            const wx = cols.w1[x];
            res[y * size + x] = f(f(tmp[y * w + cols.i0[x]] * f(1 - wx)) + f(tmp[y * w + cols.i1[x]] * wx));
          }
        }
        return res;
      });
    }
    if (planes.length === 1 && inChans === 3) planes = [planes[0], planes[0], planes[0]];
    const mean = channelStats(pp.mean, planes.length), std = channelStats(pp.std, planes.length);
    const base = ci * inChans * size * size;
    planes.forEach((p, k) => {
      const m = f(mean[k]), s = f(std[k]);
      for (let i = 0; i < size * size; i++) out[base + k * size * size + i] = f(f(p[i] - m) / s);
    });
  });
  return out;
}

// The same batch mirrored left-right (the width axis), for flip test-time augmentation.
export function flipWidth(x, n, c, h, w) {
  const out = new Float32Array(x.length);
  for (let i = 0; i < n * c * h; i++) {
    const row = i * w;
    for (let j = 0; j < w; j++) out[row + j] = x[row + w - 1 - j];
  }
  return out;
}

export function softmax(logits, k) {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length / k; r++) {
    let max = -Infinity, sum = 0;
    for (let j = 0; j < k; j++) max = Math.max(max, logits[r * k + j]);
    for (let j = 0; j < k; j++) { out[r * k + j] = Math.exp(logits[r * k + j] - max); sum += out[r * k + j]; }
    for (let j = 0; j < k; j++) out[r * k + j] /= sum;
  }
  return out;
}

// What a class prior adds to the logits, as litefer.prior.log_weights: nothing for "dataset"; for
// "balanced", minus the log of the card's training class frequencies (logit adjustment); for
// "balanced:TAU", TAU times that.
export function priorAdjustment(prior, card) {
  if (!prior || prior === "dataset") return null;
  const tau = prior === "balanced" ? 1 : (prior.startsWith("balanced:") ? Number(prior.slice(9)) : NaN);
  if (!(tau >= 0 && tau <= 1)) {
    throw new Error(`unknown prior "${prior}": expected "dataset", "balanced" or "balanced:TAU" (TAU from 0 to 1)`);
  }
  if (tau === 0) return null;
  const freq = card.class_prior;
  if (!freq) throw new Error(`${card.model_name} stores no training class prior, so prior "${prior}" is not available`);
  const total = card.class_names.reduce((a, c) => a + Number(freq[c]), 0);
  return card.class_names.map((c) => -tau * Math.log(Number(freq[c]) / total));
}

// ---------------------------------------------------------------------------- face detection

// Eye search inside a face (HaarDetector._eyes): the face's upper band resized to a fixed width.
const EYE_BAND = [0.12, 0.58], EYE_WIDTH = 120, EYE_MIN = 14, EYE_MAX = 60;

export class HaarDetector {
  // settings: the `browser.detector` object of GET /v1/model; faceXml/eyeXml: cascade file bytes.
  constructor(cv, settings, faceXml, eyeXml) {
    this.cv = cv;
    this.s = settings;
    this.name = "haar";
    this.face = HaarDetector.load(cv, "litefer_face.xml", faceXml);
    this.eye = settings.find_eyes ? HaarDetector.load(cv, "litefer_eye.xml", eyeXml) : null;
  }

  static load(cv, name, bytes) {
    try { cv.FS_unlink("/" + name); } catch (e) { /* not written yet */ }
    cv.FS_createDataFile("/", name, new Uint8Array(bytes), true, false, false);
    const clf = new cv.CascadeClassifier();
    if (!clf.load(name) || clf.empty()) throw new Error(`cannot load the Haar cascade ${name}`);
    return clf;
  }

  // Faces in a BGR cv.Mat, largest first: {box: [x, y, w, h], score, eyes: [[x, y], [x, y]] | null}
  // in the Mat's pixel coordinates (FaceDetector.detect + HaarDetector._detect). The image is
  // searched at the scale where search_size (min_size by octaves) becomes the cascade's window.
  detect(bgr) {
    const cv = this.cv, s = this.s;
    const h = bgr.rows, w = bgr.cols;
    let scale = Math.min(1, s.max_side / Math.max(h, w));
    // search_size: min_size rounded down to its octave of 32 px, as the server's detector scales its copy
    if (s.smallest_window) scale = Math.min(scale, s.smallest_window / (s.search_size || s.min_size));
    const small = new cv.Mat(), gray = new cv.Mat();
    const rects = new cv.RectVector(), counts = new cv.IntVector();
    try {
      if (scale === 1) bgr.copyTo(small);
      else cv.resize(bgr, small, new cv.Size(Math.max(1, roundHalfEven(w * scale)), Math.max(1, roundHalfEven(h * scale))),
                     0, 0, cv.INTER_AREA);
      cv.cvtColor(small, gray, cv.COLOR_BGR2GRAY);
      const m = Math.max(24, Math.trunc(roundHalfEven(s.min_size * scale)));
      this.face.detectMultiScale2(gray, rects, counts, s.scale_factor, s.min_neighbors, 0, new cv.Size(m, m), new cv.Size(0, 0));
      let found = [];
      for (let i = 0; i < rects.size(); i++) {
        const r = rects.get(i), n = counts.get(i);
        const eyes = this.eye ? this.eyes(gray, r.x, r.y, r.width, r.height) : null;
        if (this.eye && eyes === null && n < s.min_score_without_eyes) continue;   // likely a false positive
        found.push({ box: [r.x, r.y, r.width, r.height], score: n, eyes });
      }
      if (scale !== 1) {                          // Detection.scaled(1 / scale); eyes are float32 there
        const k = 1 / scale, f = Math.fround;
        found = found.map((d) => ({ box: d.box.map((v) => v * k), score: d.score,
                                    eyes: d.eyes && d.eyes.map(([x, y]) => [f(x * k), f(y * k)]) }));
      }
      found = found.filter((d) => Math.min(d.box[2], d.box[3]) >= s.min_size * 0.95);
      return found.sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
    } finally {
      small.delete(); gray.delete(); rects.delete(); counts.delete();
    }
  }

  // The most plausible eye pair in the face's upper band, subject's right eye (image left) first.
  eyes(gray, x, y, w, h) {
    const cv = this.cv;
    const y0 = Math.min(gray.rows, y + Math.trunc(EYE_BAND[0] * h)), y1 = Math.min(gray.rows, y + Math.trunc(EYE_BAND[1] * h));
    const x1 = Math.min(gray.cols, x + w);
    if (y1 <= y0 || x1 <= x) return null;
    const top = gray.roi(new cv.Rect(x, y0, x1 - x, y1 - y0));
    const s = EYE_WIDTH / w;
    const roi = new cv.Mat(), found = new cv.RectVector();
    try {
      cv.resize(top, roi, new cv.Size(EYE_WIDTH, Math.max(1, roundHalfEven((y1 - y0) * s))), 0, 0,
                s < 1 ? cv.INTER_AREA : cv.INTER_LINEAR);
      this.eye.detectMultiScale(roi, found, 1.1, 3, 0, new cv.Size(EYE_MIN, EYE_MIN), new cv.Size(EYE_MAX, EYE_MAX));
      const centres = [];
      for (let i = 0; i < found.size(); i++) {
        const r = found.get(i);
        centres.push([r.x + r.width / 2, r.y + r.height / 2, r.width]);
      }
      const mid = EYE_WIDTH / 2;
      let best = null, bestCost = Infinity;
      for (let i = 0; i < centres.length; i++) {
        for (let j = i + 1; j < centres.length; j++) {
          const [a, b] = [centres[i], centres[j]];
          const [left, right] = a[0] < b[0] ? [a, b] : [b, a];
          const dx = right[0] - left[0], dy = right[1] - left[1];
          if (!(0.25 * EYE_WIDTH <= dx && dx <= 0.62 * EYE_WIDTH) || Math.abs(dy) > 0.5 * dx) continue;
          if (left[0] > mid || right[0] < mid) continue;
          const cost = Math.abs((left[0] + right[0]) / 2 - mid) / mid + Math.abs(dx / EYE_WIDTH - 0.38)
                     + Math.abs(left[2] - right[2]) / mid;
          if (cost < bestCost) { best = [left, right]; bestCost = cost; }
        }
      }
      if (best === null) return null;
      const f = Math.fround;                      // HaarDetector._eyes returns a float32 array
      return [[f(x + best[0][0] / s), f(y0 + best[0][1] / s)], [f(x + best[1][0] / s), f(y0 + best[1][1] / s)]];
    } finally {
      top.delete(); roi.delete(); found.delete();
    }
  }
}

// YuNet (OpenCV's cv2.FaceDetectorYN, as YuNetDetector runs it) on the server's own model file in
// onnxruntime-web. The net is anchor-free: for each stride (8, 16, 32) one cell per stride x stride
// pixels of the input, whose outputs cls_S and obj_S give the score sqrt(cls * obj) (both clamped to
// [0, 1]), bbox_S the box (centre offset in cells, log of the side in cells) and kps_S five landmarks
// (offsets in cells). The input is the BGR image, 0-255, padded with zeros at the right and bottom to a
// multiple of the largest stride, as FaceDetectorYN pads it. The decoding rounds to float32 where
// OpenCV computes in float, and the non-maximum suppression is cv::dnn::NMSBoxes': scores above the
// threshold, best first (ties in cell order), the top_k best kept, each then dropped when it overlaps a
// kept one by more than nms_threshold, overlaps measured on the boxes cut to whole pixels (C++ int()).
export class YuNetDetector {
  // settings: the yunet `browser.detector` object of GET /v1/model; session: an ort.InferenceSession of
  // the model file at settings.url.
  constructor(cv, ort, session, settings) {
    this.cv = cv; this.ort = ort; this.session = session; this.s = settings;
    this.name = "yunet";
    this.strides = session.outputNames.filter((n) => n.startsWith("cls_")).map((n) => Number(n.slice(4)))
      .sort((a, b) => a - b);
    for (const k of ["cls", "obj", "bbox", "kps"]) {
      for (const st of this.strides) {
        if (!session.outputNames.includes(`${k}_${st}`)) throw new Error(`the YuNet model has no ${k}_${st} output`);
      }
    }
    if (!this.strides.length) throw new Error("the YuNet model has no cls_<stride> outputs");
    this.divisor = Math.max(...this.strides);
  }

  // Faces in a BGR cv.Mat, largest first: {box: [x, y, w, h], score, landmarks: 5 x [x, y], eyes} in the
  // Mat's pixel coordinates (FaceDetector.detect + YuNetDetector._detect). An image larger than max_side
  // is searched once, downscaled to max_side (the server also searches tiles of it for small faces).
  async detect(bgr) {
    const cv = this.cv, s = this.s, f = Math.fround;
    const h = bgr.rows, w = bgr.cols;
    const scale = Math.min(1, s.max_side / Math.max(h, w));
    let small = bgr;
    if (scale !== 1) {
      small = new cv.Mat();
      cv.resize(bgr, small, new cv.Size(Math.max(1, roundHalfEven(w * scale)), Math.max(1, roundHalfEven(h * scale))),
                0, 0, cv.INTER_AREA);
    }
    let found;
    try {
      found = await this.raw(small);
    } finally {
      if (small !== bgr) small.delete();
    }
    found = found.filter((d) => Math.min(d.box[2], d.box[3]) >= s.min_size * scale);
    if (scale !== 1) {                            // Detection.scaled(1 / scale); landmarks are float32 there
      const k = 1 / scale;
      found = found.map((d) => ({ box: d.box.map((v) => v * k), score: d.score,
                                  landmarks: d.landmarks.map(([x, y]) => [f(x * k), f(y * k)]) }));
    }
    found = found.filter((d) => Math.min(d.box[2], d.box[3]) >= s.min_size * 0.95)
      .map((d) => ({ ...d, eyes: d.landmarks.slice(0, 2) }));
    return found.sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
  }

  // What FaceDetectorYN.detect returns for a BGR cv.Mat, best first: {box, score, landmarks}.
  async raw(bgr) {
    const h = bgr.rows, w = bgr.cols, d = this.divisor;
    const pw = Math.ceil(w / d) * d, ph = Math.ceil(h / d) * d;
    const x = new Float32Array(3 * ph * pw);          // planar B, G, R; the padding stays 0
    const px = bgr.data, step = bgr.step[0];
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        const i = r * step + 3 * c, o = r * pw + c;
        x[o] = px[i]; x[ph * pw + o] = px[i + 1]; x[2 * ph * pw + o] = px[i + 2];
      }
    }
    const input = this.session.inputNames[0];
    const out = await this.session.run({ [input]: new this.ort.Tensor("float32", x, [1, 3, ph, pw]) });
    return nmsBoxes(decodeYuNet(out, this.strides, pw, ph, this.s.score_threshold), this.s.nms_threshold, this.s.top_k);
  }
}

// The candidates of YuNet's outputs (`out`: name -> tensor, for a pw x ph input) scoring above
// `threshold`, in cell order (stride by stride, row by row): {box: [x, y, w, h], score, landmarks}.
export function decodeYuNet(out, strides, pw, ph, threshold) {
  const f = Math.fround, thr = f(threshold), clamp = (v) => Math.min(1, Math.max(0, v));
  const found = [];
  for (const st of strides) {
    const cols = pw / st, rows = ph / st;
    const cls = out[`cls_${st}`].data, obj = out[`obj_${st}`].data, bbox = out[`bbox_${st}`].data, kps = out[`kps_${st}`].data;
    if (cls.length !== rows * cols) throw new Error(`YuNet cls_${st}: ${cls.length} cells for a ${pw}x${ph} input`);
    for (let i = 0; i < rows * cols; i++) {
      const score = f(Math.sqrt(f(clamp(cls[i]) * clamp(obj[i]))));
      if (!(score > thr)) continue;
      const r = Math.floor(i / cols), c = i % cols, b = 4 * i, k = 10 * i;
      const cx = f(f(c + bbox[b]) * st), cy = f(f(r + bbox[b + 1]) * st);
      const bw = f(f(Math.exp(bbox[b + 2])) * st), bh = f(f(Math.exp(bbox[b + 3])) * st);
      const landmarks = [];
      for (let n = 0; n < 5; n++) landmarks.push([f(f(kps[k + 2 * n] + c) * st), f(f(kps[k + 2 * n + 1] + r) * st)]);
      found.push({ box: [f(cx - f(bw / 2)), f(cy - f(bh / 2)), bw, bh], score, landmarks });
    }
  }
  return found;
}

// cv::dnn::NMSBoxes on candidates already above the score threshold, on their boxes cut to whole
// pixels (cv::Rect2i): best first, at most topK (0: all), each kept unless its overlap (intersection
// over union) with a kept one exceeds nmsThreshold.
export function nmsBoxes(cands, nmsThreshold, topK) {
  const f = Math.fround, thr = f(nmsThreshold);
  let order = cands.map((_, i) => i).sort((a, b) => cands[b].score - cands[a].score);   // stable: ties in cell order
  if (topK > 0) order = order.slice(0, topK);
  const rect = (d) => d.box.map((v) => Math.trunc(v));
  const kept = [];
  for (const i of order) {
    const [ax, ay, aw, ah] = rect(cands[i]);
    const ok = kept.every((j) => {
      const [bx, by, bw, bh] = rect(cands[j]);
      const iw = Math.min(ax + aw, bx + bw) - Math.max(ax, bx), ih = Math.min(ay + ah, by + bh) - Math.max(ay, by);
      const inter = iw > 0 && ih > 0 ? iw * ih : 0, union = aw * ah + bw * bh - inter;
      return f(union > 0 ? inter / union : 1) <= thr;
    });
    if (ok) kept.push(i);
  }
  return kept.map((i) => cands[i]);
}

// ---------------------------------------------------------------------------- face crops

// Least-squares similarity (rotation, uniform scale, translation) taking the points src to dst, as
// align._similarity: [re, im] of a (dst = a src + t in complex form) and t.
export function similarity(src, dst) {
  const n = src.length, mean = (p, k) => p.reduce((a, q) => a + q[k], 0) / n;
  const msx = mean(src, 0), msy = mean(src, 1), mdx = mean(dst, 0), mdy = mean(dst, 1);
  let re = 0, im = 0, norm = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - msx, sy = src[i][1] - msy, dx = dst[i][0] - mdx, dy = dst[i][1] - mdy;
    re += sx * dx + sy * dy; im += sx * dy - sy * dx; norm += sx * sx + sy * sy;
  }
  norm = Math.max(norm, 1e-12);
  re /= norm; im /= norm;
  return { re, im, t: [mdx - (re * msx - im * msy), mdy - (im * msx + re * msy)] };
}

// Forward 2 x 3 map from image to crop pixels (align.frame_transform, OpenCV pixel-centre convention).
// A detection with five landmarks (YuNet) is mapped onto framing.template (framing.template_size px)
// by the similarity above; any other (Haar) is framed by its box enlarged framing.frame_scale times
// about its centre. Either is levelled (by the landmarks' rotation, or the eye line) only when the
// tilt exceeds levelAbove degrees; otherwise it is scaled and shifted only.
export function frameTransform(det, size, rotate, levelAbove, framing) {
  let a, b, tx, ty;                                // continuous coordinates: [[a, -b, tx], [b, a, ty]]
  if (det.landmarks && det.landmarks.length === 5) {
    const f = Math.fround, k = size / framing.template_size;
    const src = det.landmarks.map(([x, y]) => [x + 0.5, y + 0.5]);
    const dst = framing.template.map(([x, y]) => [x * k, y * k]);
    const m = similarity(src, dst);
    ({ re: a, im: b } = m);
    [tx, ty] = m.t;
    if (!rotate || Math.abs(Math.atan2(b, a) * 180 / Math.PI) <= levelAbove) {
      a = Math.hypot(a, b); b = 0;
      // the template's centre as NumPy has it: a float32 mean, scaled in float32
      const centre = [0, 1].map((j) => f(f(framing.template.reduce((acc, p) => f(acc + f(p[j])), 0) / 5) * k));
      tx = centre[0] - a * (src.reduce((acc, p) => acc + p[0], 0) / 5);
      ty = centre[1] - a * (src.reduce((acc, p) => acc + p[1], 0) / 5);
    }
  } else {
    const [x, y, w, h] = det.box;
    const side = Math.max(w, h) * framing.frame_scale;
    const cx = x + w / 2, cy = y + h / 2;
    let theta = 0;
    if (det.eyes) {
      const [[rx, ry], [lx, ly]] = det.eyes;
      theta = Math.atan2(ly - ry, lx - rx);
      if (!rotate || Math.abs(theta * 180 / Math.PI) <= levelAbove) theta = 0;
    }
    const k = size / side;
    a = Math.cos(-theta) * k; b = Math.sin(-theta) * k;
    tx = size / 2 - (a * cx + -b * cy); ty = size / 2 - (b * cx + a * cy);
  }
  // continuous -> OpenCV pixel centres: t + (A - I) [0.5, 0.5]
  return [[a, -b, tx + ((a - 1) * 0.5 + -b * 0.5)], [b, a, ty + (b * 0.5 + (a - 1) * 0.5)]];
}

// cv::invertAffineTransform, same arithmetic.
export function invertAffine(M) {
  const [[a11, a12, b1], [a21, a22, b2]] = M;
  let D = a11 * a22 - a12 * a21;
  D = D !== 0 ? 1 / D : 0;
  const A11 = a22 * D, A22 = a11 * D, A12 = -a12 * D, A21 = -a21 * D;
  return [[A11, A12, -A11 * b1 - A12 * b2], [A21, A22, -A21 * b1 - A22 * b2]];
}

// The face as the model's training data framed it (align.crop_face): {data, height, width, channels,
// matrix} (matrix: the 2 x 3 image -> crop warp, frameTransform's). `image` is the full-resolution grey
// (1-channel) or RGB (3-channel) cv.Mat, as spec.grayscale says; `framing`: the detector's settings.
export function cropFace(cv, image, det, spec, framing) {
  const size = Number(spec.size);
  const M = frameTransform(det, size, spec.rotate, Number(spec.level_above), framing);
  const [[a00, a01, t0], [a10, a11, t1]] = M;
  const scale = Math.sqrt(Math.abs(a00 * a11 - a01 * a10));
  const inv = invertAffine(M);
  const corners = [[-1, -1], [size, -1], [-1, size], [size, size]];
  const xs = corners.map(([u, v]) => u * inv[0][0] + v * inv[0][1] + inv[0][2]);
  const ys = corners.map(([u, v]) => u * inv[1][0] + v * inv[1][1] + inv[1][2]);
  const w = image.cols, h = image.rows;
  const x0 = Math.floor(Math.min(...xs)) - 2, y0 = Math.floor(Math.min(...ys)) - 2;
  const x1 = Math.ceil(Math.max(...xs)) + 3, y1 = Math.ceil(Math.max(...ys)) + 3;
  const x0c = Math.max(x0, 0), y0c = Math.max(y0, 0), x1c = Math.min(x1, w), y1c = Math.min(y1, h);
  if (x1c <= x0c || y1c <= y0c) throw new Error(`face box ${det.box} lies outside the ${w}x${h} image`);
  const roi = image.roi(new cv.Rect(x0c, y0c, x1c - x0c, y1c - y0c));
  const tx = t0 + (a00 * x0c + a01 * y0c), ty = t1 + (a10 * x0c + a11 * y0c);
  const factor = scale < 0.5 ? Math.trunc(Math.min(8, Math.floor(1 / scale))) : 1;
  const big = size * factor;
  const Mf = cv.matFromArray(2, 3, cv.CV_64F, [a00 * factor, a01 * factor, tx * factor + (factor - 1) / 2,
                                               a10 * factor, a11 * factor, ty * factor + (factor - 1) / 2]);
  const warped = new cv.Mat(), crop = new cv.Mat();
  try {
    cv.warpAffine(roi, warped, Mf, new cv.Size(big, big), cv.INTER_LINEAR, cv.BORDER_REPLICATE, new cv.Scalar());
    if (factor > 1) cv.resize(warped, crop, new cv.Size(size, size), 0, 0, cv.INTER_AREA);
    else warped.copyTo(crop);
    return { data: new Uint8Array(crop.data), height: size, width: size, channels: crop.channels(), matrix: M };
  } finally {
    roi.delete(); Mf.delete(); warped.delete(); crop.delete();
  }
}

// ---------------------------------------------------------------------------- explanations

// The ONNX output that holds every class's Grad-CAM map (litefer export --explain; litefer.models.explain).
export const CAM_OUTPUT = "cam";

// Face i's map of class k, h x w, from the "cam" output (dims [B, K, h, w], raw, not normalised).
// With flip TTA the batch is [plain, mirrored] (B = 2n): the mirrored pass's map is mirrored back and
// averaged with the plain one, as the logits are.
export function classCam(data, dims, n, i, k, tta) {
  const [, K, h, w] = dims.map(Number);
  const plain = (i * K + k) * h * w;
  const out = new Float32Array(h * w);
  if (!tta) {
    out.set(data.subarray(plain, plain + h * w));
    return out;
  }
  const mirrored = ((n + i) * K + k) * h * w;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) out[y * w + x] = (data[plain + y * w + x] + data[mirrored + y * w + w - 1 - x]) / 2;
  }
  return out;
}

// The crop-aligned map of Python's Explanation.map: cam / max (all zeros when the max is 0), resized
// bilinearly to side x side with cv2.INTER_LINEAR's sampling (pixel centres, edges clamped).
export function cropMap(cam, h, w, side) {
  let max = 0;
  for (let i = 0; i < cam.length; i++) max = Math.max(max, cam[i]);
  const out = new Float32Array(side * side);
  if (!(max > 0)) return out;
  const rows = bilinearWeights(h, side), cols = bilinearWeights(w, side);
  for (let y = 0; y < side; y++) {
    const r0 = rows.i0[y] * w, r1 = rows.i1[y] * w, wy = rows.w1[y];
    for (let x = 0; x < side; x++) {
      const c0 = cols.i0[x], c1 = cols.i1[x], wx = cols.w1[x];
      const top = cam[r0 + c0] * (1 - wx) + cam[r0 + c1] * wx, bottom = cam[r1 + c0] * (1 - wx) + cam[r1 + c1] * wx;
      out[y * side + x] = (top * (1 - wy) + bottom * wy) / max;
    }
  }
  return out;
}

// RGBA pixels of a map in [0, 1], as the Python overlays colour it: the jet ramp (dark blue, low, through
// cyan and yellow to dark red, high) with opacity rising from 0 to 0.6 with the value, so weak regions
// leave the face visible.
const HEAT_ALPHA = 0.6;

export function heatPixels(map) {
  const px = new Uint8ClampedArray(4 * map.length);
  const clamp = (v) => Math.min(1, Math.max(0, v));
  for (let i = 0; i < map.length; i++) {
    const v = clamp(map[i]);
    px[4 * i] = 255 * clamp(1.5 - Math.abs(4 * v - 3));
    px[4 * i + 1] = 255 * clamp(1.5 - Math.abs(4 * v - 2));
    px[4 * i + 2] = 255 * clamp(1.5 - Math.abs(4 * v - 1));
    px[4 * i + 3] = 255 * HEAT_ALPHA * v;
  }
  return px;
}

// The canvas transform [a, b, c, d, e, f] (setTransform's order) that draws a crop-sized image back
// over the face: the inverse of the crop's warp M (pixel-centre convention, as OpenCV's), taken to
// continuous canvas coordinates, then divided by `scale` (analysed pixels per displayed pixel).
export function cropToImage(M, scale = 1) {
  const [[a, c, e], [b, d, f]] = invertAffine(M);
  // image centre = inv(crop centre); continuous points sit half a pixel past the centres
  const e1 = e + 0.5 - 0.5 * (a + c), f1 = f + 0.5 - 0.5 * (b + d);
  return [a / scale, b / scale, c / scale, d / scale, e1 / scale, f1 / scale];
}

// ---------------------------------------------------------------------------- the recognizer

export class DeviceRecognizer {
  // card: GET /v1/model; session: an ort.InferenceSession of GET /v1/model.onnx; detector: a HaarDetector
  // or YuNetDetector (their settings also say how their faces are framed).
  constructor(cv, ort, session, card, detector) {
    this.cv = cv; this.ort = ort; this.session = session; this.card = card;
    this.spec = card.crop; this.pp = card.preprocess; this.classes = card.class_names;
    this.tta = Boolean(card.tta_flip);
    this.detector = detector;
    this.inputName = session.inputNames[0];
    this.logitsName = session.outputNames[0];
    this.canExplain = session.outputNames.includes(CAM_OUTPUT);   // the model has the Grad-CAM output
  }

  // Logits of crops (Float32Array, N x K, mirror-averaged with TTA) and, when `explain`, the raw
  // "cam" output ({data, dims}, the mirrored pass included).
  async forward(crops, explain = false) {
    const n = crops.length, c = Number(this.pp.in_chans), s = Number(this.pp.input_size), k = this.classes.length;
    let x = preprocess(crops, this.pp);
    let batch = n;
    if (this.tta) {
      const both = new Float32Array(2 * x.length);
      both.set(x); both.set(flipWidth(x, n, c, s, s), x.length);
      x = both; batch = 2 * n;
    }
    if (explain && !this.canExplain) throw new Error(`${this.card.model_name}: this ONNX model has no "${CAM_OUTPUT}" output`);
    const feeds = { [this.inputName]: new this.ort.Tensor("float32", x, [batch, c, s, s]) };
    const out = await this.session.run(feeds, explain ? [this.logitsName, CAM_OUTPUT] : [this.logitsName]);
    const logits = out[this.logitsName].data;
    const avg = new Float32Array(n * k);
    for (let i = 0; i < n * k; i++) avg[i] = this.tta ? (logits[i] + logits[n * k + i]) / 2 : logits[i];
    return { logits: avg, cam: explain ? { data: out[CAM_OUTPUT].data, dims: out[CAM_OUTPUT].dims } : null };
  }

  // Class probabilities (Float32Array, N x K) from mirror-averaged logits under a class prior
  // ("dataset" or "balanced"); the logits are adjusted in place.
  probabilities(logits, prior = "dataset") {
    const k = this.classes.length, adjust = priorAdjustment(prior, this.card);
    if (adjust) for (let i = 0; i < logits.length; i++) logits[i] = Math.fround(logits[i] + Math.fround(adjust[i % k]));
    return softmax(logits, k);
  }

  // Faces in an ImageData (RGBA), in its pixel coordinates, shaped like the server's JSON faces.
  // The pixels go through the same OpenCV calls as in Python, which starts from BGR. With `explain`,
  // each face gets `explanation`: {label, cam (h*w, raw), resolution [h, w], map (crop-aligned, in [0, 1]),
  // side, matrix (the crop's warp)}, the map of the face's label as Python's Explanation has it.
  async recognize(imageData, prior = "dataset", explain = false) {
    const cv = this.cv;
    const rgba = cv.matFromImageData(imageData);
    const bgr = new cv.Mat(), image = new cv.Mat();
    try {
      cv.cvtColor(rgba, bgr, cv.COLOR_RGBA2BGR);
      cv.cvtColor(bgr, image, this.spec.grayscale ? cv.COLOR_BGR2GRAY : cv.COLOR_BGR2RGB);
      const dets = await this.detector.detect(bgr);
      const crops = dets.map((d) => cropFace(cv, image, d, this.spec, this.detector.s));
      if (!crops.length) return [];
      const { logits, cam } = await this.forward(crops, explain);
      const probs = this.probabilities(logits, prior);
      const k = this.classes.length;
      return dets.map((d, i) => {
        const p = probs.subarray(i * k, (i + 1) * k);
        let top = 0;
        for (let j = 1; j < k; j++) if (p[j] > p[top]) top = j;
        const scores = {};
        this.classes.forEach((name, j) => { scores[name] = p[j]; });
        const face = { box: d.box.map((v) => roundHalfEven(v)), label: this.classes[top], score: p[top], scores,
                       detection_score: d.score, aligned: Boolean(d.landmarks || d.eyes),
                       landmarks: d.landmarks || null, detection: d, crop: crops[i] };
        if (cam) face.explanation = this.explanation(cam, crops.length, i, top, crops[i]);
        return face;
      });
    } finally {
      rgba.delete(); bgr.delete(); image.delete();
    }
  }

  explanation(cam, n, i, top, crop) {
    const [h, w] = cam.dims.slice(2).map(Number);
    const raw = classCam(cam.data, cam.dims, n, i, top, this.tta);
    return { label: this.classes[top], cam: raw, resolution: [h, w], map: cropMap(raw, h, w, crop.width),
             side: crop.width, matrix: crop.matrix };
  }
}
