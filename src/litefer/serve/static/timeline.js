// The page's live timeline: a track per face and its smoothed scores over the last 30 s, in both modes.
// Ported from the Python side, live (causal) only: faces are linked to tracks as
// litefer.inference.track.TrackLinker links them, on motion alone (each track's centre moved on by its
// smoothed velocity; a face joins the track whose prediction is nearest, in face widths, within a gate
// that widens with the time unseen; the nearest pairs first; a track unseen for maxGapS ends). The page
// keeps no crops, so there is no appearance term. Scores are smoothed as
// litefer.inference.signals.smooth_results does with centred=False: the mean of the track's class
// probabilities over the last smoothS seconds, the label the top class of that mean.

export const HISTORY_S = 30;

export class LiveTimeline {
  constructor(classes, { smoothS = 0.5, historyS = HISTORY_S, maxGapS = 2, gate = 0.8, gatePerS = 1.5 } = {}) {
    Object.assign(this, { classes, smoothS, historyS, maxGapS, gate, gatePerS });
    this.reset();
  }

  reset() {
    this.tracks = new Map();        // id -> {id, centre, width, velocity, seen, recent: [{t, scores}], points: [{t, scores}]}
    this.nextId = 0;
    this.start = null;
  }

  // Gives each face (box [x, y, w, h], scores) of the frame seen at `t` seconds its `track` and `smoothed`
  // scores ({class: p}, and `smoothedLabel`); returns the faces.
  update(faces, t) {
    if (this.start === null) this.start = t;
    for (const [id, k] of this.tracks) {
      if (t - k.seen > this.maxGapS && t - k.points[k.points.length - 1].t > this.historyS) this.tracks.delete(id);
    }
    const live = [...this.tracks.values()].filter((k) => t - k.seen <= this.maxGapS);
    const centres = faces.map((f) => [f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2]);
    const pairs = [];
    live.forEach((k, j) => {
      const gap = Math.max(0, t - k.seen), gx = k.centre[0] + k.velocity[0] * gap, gy = k.centre[1] + k.velocity[1] * gap;
      faces.forEach((f, i) => {
        const d = Math.hypot(centres[i][0] - gx, centres[i][1] - gy) / Math.max(f.box[2], k.width, 1);
        if (d <= this.gate + this.gatePerS * gap) pairs.push([d, i, j]);
      });
    });
    pairs.sort((a, b) => a[0] - b[0]);
    const taken = new Set(), linked = new Array(faces.length).fill(null);
    for (const [, i, j] of pairs) {
      if (linked[i] === null && !taken.has(j)) { linked[i] = live[j]; taken.add(j); }
    }
    faces.forEach((f, i) => {
      let k = linked[i];
      if (k === null) {
        k = { id: this.nextId++, centre: centres[i], width: f.box[2], velocity: [0, 0], seen: t, recent: [], points: [] };
        this.tracks.set(k.id, k);
      } else if (t > k.seen) {
        const dt = t - k.seen;
        k.velocity = [0, 1].map((a) => 0.5 * k.velocity[a] + 0.5 * (centres[i][a] - k.centre[a]) / dt);
      }
      Object.assign(k, { centre: centres[i], width: 0.5 * k.width + 0.5 * f.box[2], seen: t });
      this.smooth(k, f, t);
    });
    return faces;
  }

  smooth(k, f, t) {
    k.recent.push({ t, scores: f.scores });
    while (k.recent.length && k.recent[0].t < t - this.smoothS - 1e-9) k.recent.shift();
    const mean = {};
    for (const c of this.classes) mean[c] = k.recent.reduce((a, r) => a + (r.scores[c] || 0), 0) / k.recent.length;
    f.track = k.id;
    f.smoothed = mean;
    f.smoothedLabel = this.classes.reduce((a, c) => (mean[c] > mean[a] ? c : a), this.classes[0]);
    k.points.push({ t, scores: mean });
    while (k.points.length && k.points[0].t < t - this.historyS) k.points.shift();
  }

  // One band per track (newest first, at most `maxBands`), each class's smoothed probability as a line over
  // the last historyS seconds, `now` at the right edge.
  draw(canvas, colors, now, maxBands = 4) {
    const bands = [...this.tracks.values()].filter((k) => k.points.length).sort((a, b) => b.seen - a.seen)
      .slice(0, maxBands);
    const band = 64, gap = 6, left = 56, width = Math.max(200, canvas.clientWidth || 640);
    canvas.width = width;
    canvas.height = Math.max(1, bands.length) * (band + gap) + 18;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.font = "12px system-ui, sans-serif";
    const x = (t) => left + (width - left - 4) * (1 - (now - t) / this.historyS);
    bands.forEach((k, row) => {
      const y0 = row * (band + gap);
      g.fillStyle = "#161b22";
      g.fillRect(left, y0, width - left - 4, band);
      g.fillStyle = "#8b949e";
      g.fillText(`face ${k.id}`, 4, y0 + band / 2 + 4);
      this.classes.forEach((c, j) => {
        g.strokeStyle = colors[j % colors.length];
        g.lineWidth = 1.5;
        g.beginPath();
        k.points.forEach((p, n) => {
          const px = x(p.t), py = y0 + band - 2 - (band - 4) * p.scores[c];
          if (n === 0) g.moveTo(px, py); else g.lineTo(px, py);
        });
        g.stroke();
      });
    });
    g.fillStyle = "#8b949e";
    const y = canvas.height - 4;
    for (let s = 0; s <= this.historyS; s += 5) g.fillText(s === 0 ? "now" : `-${s} s`, x(now - s) - (s === 0 ? 26 : 10), y);
  }
}
