// SmallCovid overlay viewer: a Streamlit components-v2 module (no build step).
//
// Python (pages/_segment_parts.py, data from smallcovid/app/viewer.py) sends once per
// scan: the display image, per model a byte map (bits 0-6: how many grid thresholds
// the lesion probability reaches, bit 7: consolidation) and per-threshold histograms.
// Every threshold / opacity / toggle change is handled here: the canvases are
// recoloured and the tables recomputed from suffix sums of the histograms, without a
// server round trip. The settled view is sent back (setStateValue "view", debounced)
// so the downloads on the server follow it.
//
// A segmented volume (data.volume) comes as a header plus per-slice items (raw HU or an
// 8-bit image, every model's byte map, that slice's histograms), a block at a time around
// the slice the viewer last settled on. The viewer keeps the items it received (at most
// MAX_ITEMS) and switches slice (J / K, its Slice slider) and display window in the
// browser; the settled slice, window and the slices it holds go back with the view, and
// the page sends the items it still lacks.

const TYPE_RGB = { 1: [255, 210, 0], 2: [230, 30, 120] }; // ground-glass, consolidation (viz.TYPE_RGB)
const LESION_RGB = [255, 64, 32];
const TRUTH_RGB = [0, 230, 255];
const AGREE_RGB = [40, 200, 80];
const RAMP = [[59, 130, 246], [168, 85, 247], [236, 72, 153], [249, 115, 22]];
const COMMIT_MS = 350;
// A slice step settles later (a rerun of the page while the user steps through slices would
// compete with the repaints), unless the slices ahead are missing: then the page is asked now.
const SLICE_COMMIT_MS = 1500;
const AHEAD = 4; // slices on each side that must be held
const MAX_ITEMS = 96; // compressed slice items kept in the browser (about 0.4 MB each at 512x512)
const MAX_DECODED = 6; // decoded slices kept (about 2.6 MB each at 512x512 with four models)
const EMPTY_NOTE = "Empty-mask convention: when prediction and ground truth are both empty, Dice and IoU are 1; " +
  "when exactly one of them is empty, they are 0.";

function ramp(k, n) {
  const t = n <= 2 ? 0 : (k - 1) / (n - 2);
  const x = t * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((v, j) => (1 - f) * v + f * RAMP[i + 1][j]);
}

const hex = (rgb) => "#" + rgb.map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");

async function inflate(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function levelOf(grid, t) {
  let best = 0, bestErr = Infinity;
  for (let i = 0; i < grid.length; i++) {
    const err = Math.abs(grid[i] - t);
    if (err < bestErr) { bestErr = err; best = i; }
  }
  return best + 1;
}

function suffix(counts, k) {
  let s = 0;
  for (let i = k; i < counts.length; i++) s += counts[i];
  return s;
}

const total = (counts) => suffix(counts, 0);
const ratio = (num, den, empty) => (den > 0 ? num / den : empty);

function scores(tp, fp, fn) {
  const bothEmpty = tp + fp + fn === 0 ? 1 : 0;
  return {
    dice: ratio(2 * tp, 2 * tp + fp + fn, bothEmpty),
    precision: ratio(tp, tp + fp, fn === 0 ? 1 : 0),
    recall: ratio(tp, tp + fn, fp === 0 ? 1 : 0),
    iou: ratio(tp, tp + fp + fn, bothEmpty),
  };
}

// Mirrors smallcovid.app.viewer.metrics_at.
function metricsAt(hist, k, typePixels) {
  const out = { area: suffix(hist.all, k), area1: suffix(hist.kind1, k), area2: suffix(hist.kind2, k) };
  if (hist.lung) out.in_lung = suffix(hist.lung, k);
  if (hist.pos) {
    const tp = suffix(hist.pos, k), fp = suffix(hist.neg, k);
    Object.assign(out, scores(tp, fp, total(hist.pos) - tp));
    if (typePixels && hist.match1) {
      for (const t of [1, 2]) {
        if (!typePixels[t]) { out["dice" + t] = null; continue; } // no truth of this type: "—"
        const tpt = suffix(hist["match" + t], k);
        out["dice" + t] = scores(tpt, out["area" + t] - tpt, typePixels[t] - tpt).dice;
      }
    }
  }
  return out;
}

// Separate lesions: 8-connected components of lev >= k (union-find, one pass).
function components(lev, k, w, h, labels, parent) {
  let next = 1;
  const find = (a) => { while (parent[a] !== a) { parent[a] = parent[parent[a]]; a = parent[a]; } return a; };
  const join = (a, b) => { a = find(a); b = find(b); if (a !== b) parent[Math.max(a, b)] = Math.min(a, b); return Math.min(a, b); };
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (lev[i] < k) { labels[i] = 0; continue; }
      let l = x > 0 ? labels[i - 1] : 0;
      if (y > 0) {
        const up = i - w;
        if (x > 0 && labels[up - 1]) l = l ? join(l, labels[up - 1]) : labels[up - 1];
        if (labels[up]) l = l ? join(l, labels[up]) : labels[up];
        if (x < w - 1 && labels[up + 1]) l = l ? join(l, labels[up + 1]) : labels[up + 1];
      }
      if (!l) { l = next++; parent[l] = l; }
      labels[i] = l;
    }
  }
  let n = 0;
  for (let l = 1; l < next; l++) if (find(l) === l) n++;
  return n;
}

function fmt(v, d) {
  return v == null || Number.isNaN(v) ? "—" : Number(v).toFixed(d);
}

const MAX_ASPECT = 1.25; // panel height / panel width at most

/** Put `node` in place of the viewer (or its error message) under `root`, or append it.
 * `root` is a ShadowRoot: ":scope > .scv" matches nothing there, so look at its children. */
function replaceOwn(root, node) {
  const old = Array.from(root.children).filter((c) => c.matches(".scv, .err"));
  if (old.length) {
    old[0].replaceWith(node);
    old.slice(1).forEach((c) => c.remove());
  } else {
    root.append(node);
  }
}

class Viewer {
  constructor(root, data) {
    this.root = root;
    this.data = data;
    this.view = Object.assign({ threshold: null, opacity: 0.45, types: true, cards: false }, data.view || {});
    this.seq = 0;
    this.timer = null;
    this.cur = data; // what the tables read: models' histograms, truth, quantities
    if (data.volume) {
      const vol = data.volume;
      this.items = new Map();
      this.decoded = new Map();
      this.k = data.goto ? data.goto.index : 0;
      this.gotoSeq = data.goto ? data.goto.seq : 0;
      this.win = vol.window || (vol.windows.lung ? { name: "lung", width: vol.windows.lung[0], level: vol.windows.lung[1] } : null);
      this.addItems(data.slices || []);
    }
    this.build();
  }

  addItems(items) {
    for (const it of items) this.items.set(it.index, it);
    if (this.items.size > MAX_ITEMS) { // keep the slices nearest the cursor
      const far = Array.from(this.items.keys()).sort((a, b) => Math.abs(b - this.k) - Math.abs(a - this.k));
      for (const k of far.slice(0, this.items.size - MAX_ITEMS)) { this.items.delete(k); this.decoded.delete(k); }
    }
  }

  /** New data from the server for the same volume: more slices, and maybe a slice to go to. */
  merge(data) {
    this.addItems(data.slices || []);
    if (data.goto && data.goto.seq > this.gotoSeq) {
      this.gotoSeq = data.goto.seq;
      this.goto(data.goto.index, false);
    } else if (this.waiting != null && this.items.has(this.waiting)) {
      this.goto(this.waiting, false);
    }
  }

  thr() {
    return this.view.threshold == null ? this.data.default_threshold : this.view.threshold;
  }

  build() {
    const d = this.data;
    const w = el("div", { class: "scv", "data-testid": "scv-viewer", "data-key": String(d.key) });
    // --- controls
    const thrIn = el("input", { type: "range", min: "0.01", max: "0.99", step: "0.01", "aria-label": "Threshold" });
    const thrOut = el("output", { class: "val" });
    const paper = el("button", { type: "button", class: "paper", title: "Set the threshold to the paper's 0.8" },
      `${d.paper_threshold} (paper)`);
    const opIn = el("input", { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "Overlay opacity" });
    const opOut = el("output", { class: "val" });
    const cards = el("input", { type: "checkbox", "aria-label": "Card thresholds" });
    const types = el("input", { type: "checkbox", "aria-label": "Lesion types" });
    const thrHelp = "A pixel is lesion when the model's probability is at least this. The start value is the median " +
      "of the selected models' card thresholds (calibrated probabilities are comparable across models); " +
      `the paper uses ${d.paper_threshold}: one click on the button beside the slider.`;
    const controls = el("div", { class: "controls" },
      el("div", { class: "ctl", title: thrHelp }, el("span", { class: "lbl", text: "Threshold" }), thrIn, thrOut, paper),
      el("div", { class: "ctl" }, el("span", { class: "lbl", text: "Overlay opacity" }), opIn, opOut),
      el("div", { class: "toggles" },
        el("label", { class: "chk", title: "Use each model's recommended threshold from its model card " +
          "(what `python -m smallcovid evaluate` uses by default)." }, cards, el("span", { text: "Card thresholds" })),
        el("label", { class: "chk", title: "Colour ground-glass (yellow) and consolidation (magenta) separately." },
          types, el("span", { text: "Lesion types" }))));
    const note = el("div", { class: "note" });
    // --- panels
    const panels = el("div", { class: "panels" });
    const mk = (caption) => {
      const c = el("canvas", { width: String(d.width), height: String(d.height) });
      panels.append(el("figure", {}, c, el("figcaption", { text: caption })));
      return c;
    };
    this.scanCanvas = mk("scan");
    this.modelCanvases = d.models.map((m) => mk(m.label));
    this.voteCanvas = d.models.length >= 2 ? mk("disagreement: lesion votes per pixel") : null;
    const legend = el("div", { class: "legend" });
    // --- before / after swipe
    const pick = el("select", { "aria-label": "Model to inspect" }, ...d.models.map((m, i) => el("option", { value: String(i) }, m.label)));
    const swipe = el("input", { type: "range", min: "0", max: "100", step: "1", value: "50", "aria-label": "Swipe position" });
    const swipeCanvas = el("canvas", { width: String(d.width), height: String(d.height), class: "swipe" });
    const inspect = el("details", { class: "inspect" },
      el("summary", { text: "Before / after: swipe between the scan and one model's overlay" }),
      el("div", { class: "controls" }, el("div", { class: "ctl" }, el("span", { class: "lbl", text: "Model" }), pick),
        el("div", { class: "ctl wide" }, el("span", { class: "lbl", text: "Overlay ◀ ▶ scan" }), swipe)),
      el("div", { class: "swipewrap" }, swipeCanvas));
    // --- tables
    const metricsBox = el("div", { class: "tables" });
    const statsBox = el("div", { class: "tables" });
    const volBox = d.volume ? this.buildVolumeControls() : null;
    w.append(...(volBox ? [volBox] : []), controls, note, panels, legend, inspect, metricsBox, statsBox);
    // A tall, narrow image drawn at the panel's full width would be thousands of pixels high:
    // narrow its canvases so that none is more than MAX_ASPECT times as high as the panel is wide.
    const aspect = d.height / d.width;
    if (aspect > MAX_ASPECT) {
      const width = `${(100 * MAX_ASPECT) / aspect}%`;
      w.querySelectorAll("canvas").forEach((c) => Object.assign(c.style, { width, marginInline: "auto" }));
    }
    // Replace only our own node: the shadow root also holds the stylesheet Streamlit put there.
    replaceOwn(this.root, w);
    Object.assign(this, { w, thrIn, thrOut, opIn, opOut, cards, types, note, legend, pick, swipe, swipeCanvas,
      metricsBox, statsBox, paper });
    this.syncControls();

    thrIn.addEventListener("input", () => { this.view.threshold = parseFloat(thrIn.value); this.update(true); });
    opIn.addEventListener("input", () => { this.view.opacity = parseFloat(opIn.value); this.update(false); });
    cards.addEventListener("change", () => { this.view.cards = cards.checked; this.update(true); });
    types.addEventListener("change", () => { this.view.types = types.checked; this.update(false); });
    paper.addEventListener("click", () => { this.view.threshold = d.paper_threshold; this.view.cards = false; this.update(true); });
    pick.addEventListener("change", () => this.drawSwipe());
    swipe.addEventListener("input", () => this.drawSwipe());
    const drag = (ev) => {
      if (ev.type !== "pointerdown" && !(ev.buttons & 1)) return;
      const r = swipeCanvas.getBoundingClientRect();
      swipe.value = String(Math.round(Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)) * 100));
      this.drawSwipe();
    };
    swipeCanvas.addEventListener("pointerdown", drag);
    swipeCanvas.addEventListener("pointermove", drag);
    inspect.addEventListener("toggle", () => this.drawSwipe());
  }

  buildVolumeControls() {
    const vol = this.data.volume, n = vol.n;
    const sl = el("input", { type: "range", min: "0", max: String(n - 1), step: "1", value: String(this.k), "aria-label": "Slice" });
    const out = el("output", { class: "val" });
    sl.addEventListener("input", () => this.goto(parseInt(sl.value, 10), true));
    const row = el("div", { class: "controls" },
      el("div", { class: "ctl wide", title: "J / K: previous / next slice, from anywhere on the page" },
        el("span", { class: "lbl", text: `Slice (of ${n}, J / K)` }), sl, out));
    this.sliceIn = sl; this.sliceOut = out;
    if (vol.units === "hu") {
      const radios = el("div", { class: "toggles", role: "radiogroup", "aria-label": "Window" });
      const names = [...Object.keys(vol.windows), "custom"];
      this.winRadios = {};
      for (const name of names) {
        const r = el("input", { type: "radio", name: `scv-win-${this.data.key}`, value: name, "aria-label": `Window ${name}` });
        const text = name === "custom" ? "custom" : `${name} (W ${vol.windows[name][0]} / L ${vol.windows[name][1]})`;
        radios.append(el("label", { class: "chk win" }, r, el("span", { text })));
        this.winRadios[name] = r;
        r.addEventListener("change", () => { if (r.checked) this.setWindow(name); });
      }
      const ww = el("input", { type: "number", min: "1", max: "6000", step: "50", "aria-label": "Window width (HU)" });
      const wl = el("input", { type: "number", min: "-1500", max: "3000", step: "10", "aria-label": "Window level (HU)" });
      const custom = () => {
        const width = parseFloat(ww.value), level = parseFloat(wl.value);
        if (width > 0 && Number.isFinite(level)) { this.win = { name: "custom", width, level }; this.redrawWindow(); }
      };
      ww.addEventListener("change", custom); wl.addEventListener("change", custom);
      this.customBox = el("span", { class: "custom" }, el("span", { class: "lbl", text: "W" }), ww,
        el("span", { class: "lbl", text: "L" }), wl);
      Object.assign(this, { winW: ww, winL: wl });
      row.append(el("div", { class: "ctl" }, el("span", { class: "lbl", text: "Window" }), radios, this.customBox));
    }
    this.syncVolume();
    return row;
  }

  syncVolume() {
    const n = this.data.volume.n;
    this.sliceIn.value = String(this.k);
    this.sliceOut.textContent = `${this.k}`;
    if (this.winRadios && this.win) {
      const r = this.winRadios[this.win.name] || this.winRadios.custom;
      r.checked = true;
      this.customBox.style.display = this.win.name === "custom" ? "" : "none";
      this.winW.value = String(this.win.width); this.winL.value = String(this.win.level);
    }
    if (this.w) { this.w.dataset.slice = String(this.k); this.w.dataset.window = this.win ? this.win.name : ""; this.w.dataset.n = String(n); }
  }

  setWindow(name) {
    const p = this.data.volume.windows[name];
    this.win = p ? { name, width: p[0], level: p[1] } : { name: "custom", width: this.win.width, level: this.win.level };
    this.redrawWindow();
  }

  redrawWindow() {
    this.syncVolume();
    const dec = this.decoded.get(this.k);
    if (!dec) return;
    this.disp = this.windowed(dec);
    this.draw(false);
    this.schedule();
  }

  /** The 8-bit display of a decoded slice in the current window (cached per window). */
  windowed(dec) {
    if (!dec.hu) return dec.disp;
    const wkey = `${this.win.width}/${this.win.level}`;
    if (dec.wkey === wkey) return dec.disp;
    const n = dec.hu.length, out = dec.disp || new Uint8Array(n), hu = dec.hu;
    const low = this.win.level - this.win.width / 2, width = this.win.width;
    for (let i = 0; i < n; i++) {
      const x = (hu[i] - low) / width;
      out[i] = x <= 0 ? 0 : x >= 1 ? 255 : Math.floor(x * 255 + 0.5);
    }
    dec.disp = out; dec.wkey = wkey;
    return out;
  }

  async decode(k) {
    if (this.decoded.has(k)) return this.decoded.get(k);
    const it = this.items.get(k);
    if (!it) return null;
    const d = this.data, n = d.width * d.height;
    const job = (async () => {
      const dec = { k };
      const img = await inflate(it.image);
      if (d.volume.units === "hu") {
        const hu = new Int16Array(n);
        for (let i = 0; i < n; i++) hu[i] = ((img[i] << 8) | img[n + i]) - 1024;
        dec.hu = hu;
      } else dec.disp = img;
      dec.maps = [];
      for (const packed of it.maps) {
        const raw = await inflate(packed);
        const lev = new Uint8Array(n), kind = new Uint8Array(n);
        for (let i = 0; i < n; i++) { lev[i] = raw[i] & 0x7f; kind[i] = raw[i] & 0x80 ? 2 : 1; }
        dec.maps.push({ lev, kind });
      }
      dec.outline = it.truth ? await inflate(it.truth.outline) : null;
      dec.cur = {
        truth: it.truth ? { name: d.truth.name, type_pixels: it.truth.type_pixels } : null,
        models: d.models.map((m, i) => Object.assign({}, m, { hist: it.hist[i] })),
        quantities: Object.assign({}, d.quantities, { lung_px: it.lung_px, truth_row: it.truth ? it.truth.row : null }),
      };
      return dec;
    })();
    this.decoded.set(k, job);
    if (this.decoded.size > MAX_DECODED) {
      const far = Array.from(this.decoded.keys()).sort((a, b) => Math.abs(b - this.k) - Math.abs(a - this.k));
      for (const j of far.slice(0, this.decoded.size - MAX_DECODED)) this.decoded.delete(j);
    }
    return job;
  }

  /** Show slice k (from the browser's items; asks the server for it when missing). */
  async goto(k, fromUser) {
    const n = this.data.volume.n;
    k = Math.min(Math.max(k | 0, 0), n - 1);
    this.k = k;
    this.syncVolume();
    if (!this.items.has(k)) {
      this.waiting = k;
      this.note.textContent = `Loading slice ${k}…`;
      clearTimeout(this.timer);
      this.commit(); // the page sends the block around it
      return;
    }
    this.waiting = null;
    const dec = await this.decode(k);
    if (this.k !== k || !dec) return; // a later step won
    this.decoded.set(k, dec);
    this.disp = this.windowed(dec);
    this.maps = dec.maps;
    this.outline = dec.outline;
    this.cur = dec.cur;
    this.syncControls();
    this.draw(true);
    if (fromUser) {
      let missing = false;
      for (let j = Math.max(0, k - AHEAD); j <= Math.min(n - 1, k + AHEAD); j++) if (!this.items.has(j)) missing = true;
      this.schedule(missing ? COMMIT_MS : SLICE_COMMIT_MS);
    }
    for (const j of [k + 1, k - 1, k + 2, k - 2]) if (j >= 0 && j < n && this.items.has(j)) this.decode(j);
  }

  step(delta) { if (this.ready) this.goto(this.k + delta, true); }

  syncControls() {
    const v = this.view;
    this.thrIn.value = String(this.thr());
    this.thrIn.disabled = !!v.cards;
    this.thrOut.textContent = v.cards ? "cards" : this.thr().toFixed(2); // each model has its own then
    this.opIn.value = String(v.opacity);
    this.opOut.textContent = Number(v.opacity).toFixed(2);
    this.cards.checked = !!v.cards;
    this.types.checked = !!v.types;
    const d = this.data;
    this.note.textContent = v.cards
      ? "Thresholds from the model cards: " + d.models.map((m) => `${m.label} ${m.card}`).join(", ")
      : "";
  }

  async load() {
    const d = this.data;
    const n = d.width * d.height;
    if (d.volume) {
      this.labels = new Int32Array(n);
      this.parent = new Int32Array(n + 2);
      this.images = [this.scanCanvas, ...this.modelCanvases, this.voteCanvas].filter(Boolean)
        .map((c) => c.getContext("2d").createImageData(d.width, d.height));
      this.ready = true;
      await this.goto(this.k, false);
      return false; // drawn (or waiting for its slice)
    }
    this.disp = await inflate(d.display);
    this.outline = d.truth ? await inflate(d.truth.outline) : null;
    this.maps = [];
    for (const m of d.models) {
      const raw = await inflate(m.maps);
      const lev = new Uint8Array(n), kind = new Uint8Array(n);
      for (let i = 0; i < n; i++) { lev[i] = raw[i] & 0x7f; kind[i] = raw[i] & 0x80 ? 2 : 1; }
      this.maps.push({ lev, kind });
    }
    this.labels = new Int32Array(n);
    this.parent = new Int32Array(n + 2);
    this.images = [this.scanCanvas, ...this.modelCanvases, this.voteCanvas].filter(Boolean)
      .map((c) => c.getContext("2d").createImageData(d.width, d.height));
    this.ready = true;
    return true;
  }

  levels() {
    const k = levelOf(this.data.grid, this.thr());
    return this.data.models.map((m) => (this.view.cards ? m.card_level : k));
  }

  update(thresholdChanged) {
    if (!this.ready || !this.maps) return;
    this.syncControls();
    this.draw(thresholdChanged);
    this.schedule();
  }

  schedule(ms = COMMIT_MS) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.commit(), ms);
  }

  commit() {
    if (!this.setStateValue) return;
    const view = Object.assign({}, this.view);
    if (this.data.volume) Object.assign(view, { slice: this.k, window: this.win, have: Array.from(this.items.keys()) });
    this.setStateValue("view", view);
  }

  draw(tables = true) {
    const d = this.data, n = d.width * d.height, a = Number(this.view.opacity), b = 1 - a;
    const ks = this.levels();
    const disp = this.disp, outline = this.outline;
    const put = (img, canvas) => canvas.getContext("2d").putImageData(img, 0, 0);
    // scan
    const s = this.images[0].data;
    for (let i = 0, j = 0; i < n; i++, j += 4) { s[j] = s[j + 1] = s[j + 2] = disp[i]; s[j + 3] = 255; }
    put(this.images[0], this.scanCanvas);
    // one overlay per model
    const col = { 1: this.view.types ? TYPE_RGB[1] : LESION_RGB, 2: this.view.types ? TYPE_RGB[2] : LESION_RGB };
    this.maps.forEach((m, mi) => {
      const o = this.images[mi + 1].data, k = ks[mi], lev = m.lev, kind = m.kind;
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const g = disp[i];
        if (outline && outline[i]) { o[j] = TRUTH_RGB[0]; o[j + 1] = TRUTH_RGB[1]; o[j + 2] = TRUTH_RGB[2]; }
        else if (lev[i] >= k) {
          const c = col[kind[i]];
          o[j] = b * g + a * c[0]; o[j + 1] = b * g + a * c[1]; o[j + 2] = b * g + a * c[2];
        } else { o[j] = o[j + 1] = o[j + 2] = g; }
        o[j + 3] = 255;
      }
      put(this.images[mi + 1], this.modelCanvases[mi]);
    });
    // disagreement: lesion votes per pixel
    if (this.voteCanvas) {
      const nm = this.maps.length, v = this.images[nm + 1].data;
      const colours = [null];
      for (let k = 1; k < nm; k++) colours.push(ramp(k, nm));
      colours.push(AGREE_RGB);
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        let votes = 0;
        for (let mi = 0; mi < nm; mi++) if (this.maps[mi].lev[i] >= ks[mi]) votes++;
        const g = disp[i];
        if (votes) {
          const c = colours[votes];
          v[j] = b * g + a * c[0]; v[j + 1] = b * g + a * c[1]; v[j + 2] = b * g + a * c[2];
        } else { v[j] = v[j + 1] = v[j + 2] = g; }
        v[j + 3] = 255;
      }
      put(this.images[nm + 1], this.voteCanvas);
    }
    this.drawLegend();
    if (tables) this.drawTables(ks);
    this.drawSwipe();
    this.seq += 1;
    const seq = this.seq, w = this.w;
    w.dataset.seq = String(seq);
    w.dataset.threshold = this.thr().toFixed(2);
    if (this.data.volume) { w.dataset.slice = String(this.k); w.dataset.window = this.win ? this.win.name : ""; }
    w.dataset.opacity = Number(this.view.opacity).toFixed(2);
    // After the frame with the new pixels: rAF runs before that paint, the task after it.
    requestAnimationFrame(() => setTimeout(() => {
      w.dataset.painted = String(seq);
      const paints = (window.__scvPaints = window.__scvPaints || []);
      paints.push({ seq, t: performance.now() });
      if (paints.length > 200) paints.splice(0, paints.length - 200);
    }, 0));
  }

  drawSwipe() {
    if (!this.ready || !this.swipe.closest("details").open) return;
    const d = this.data, ctx = this.swipeCanvas.getContext("2d");
    const i = parseInt(this.pick.value || "0", 10);
    const x = Math.round((parseInt(this.swipe.value, 10) / 100) * d.width);
    ctx.drawImage(this.scanCanvas, 0, 0);
    if (x > 0) ctx.drawImage(this.modelCanvases[i], 0, 0, x, d.height, 0, 0, x, d.height);
    if (x > 0 && x < d.width) {  // the handle, where the two images meet
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(Math.min(Math.max(x - 1, 0), d.width - 2), 0, 2, d.height);
    }
  }

  drawLegend() {
    const d = this.data, items = [];
    if (d.truth) items.push([hex(TRUTH_RGB), "□", "ground truth (outline)"]);
    if (this.view.types) {
      items.push([hex(TYPE_RGB[1]), "■", d.types["1"]], [hex(TYPE_RGB[2]), "■", d.types["2"]]);
    } else items.push([hex(LESION_RGB), "■", "lesion"]);
    const nm = d.models.length;
    if (nm >= 2) {
      for (let k = 1; k < nm; k++) items.push([hex(ramp(k, nm)), "■", `${k} of ${nm} models`]);
      items.push([hex(AGREE_RGB), "■", `all ${nm} models`]);
    }
    this.legend.replaceChildren(...items.map(([c, sym, text]) =>
      el("span", { class: "item" }, el("span", { style: `color:${c}`, text: sym }), " " + text)));
  }

  table(head, rows, highlight) {
    const t = el("table", {});
    t.append(el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", { class: i ? "num" : "", text: h })))));
    const body = el("tbody");
    for (const r of rows) {
      const tr = el("tr", r[0] === highlight ? { class: "best" } : {});
      r.forEach((c, i) => tr.append(el(i ? "td" : "th", { class: i ? "num" : "", text: String(c) })));
      body.append(tr);
    }
    t.append(body);
    return el("div", { class: "tablewrap" }, t);
  }

  drawTables(ks) {
    const d = Object.assign({}, this.data, this.cur), truth = d.truth;
    const typePixels = truth && truth.type_pixels ? { 1: truth.type_pixels["1"], 2: truth.type_pixels["2"] } : null;
    const thr = this.levels().map((k) => d.grid[k - 1]);
    const rows = d.models.map((m, i) => Object.assign({ label: m.label, thr: thr[i], ms: m.ms },
      metricsAt(m.hist, ks[i], typePixels)));
    // Agreement with the ground truth
    if (truth) {
      let best = rows[0];
      for (const r of rows) if (r.dice > best.dice) best = r;
      const head = ["model", "Dice", "precision", "recall", "IoU"];
      if (typePixels) head.push(`${d.types["1"]} Dice`, `${d.types["2"]} Dice`);
      const body = rows.map((r) => {
        const row = [r.label, fmt(r.dice, 3), fmt(r.precision, 3), fmt(r.recall, 3), fmt(r.iou, 3)];
        if (typePixels) row.push(fmt(r.dice1, 3), fmt(r.dice2, 3));
        return row;
      });
      this.metricsBox.replaceChildren(el("h3", { text: "Agreement with the ground truth" }),
        this.table(head, body, best.label),
        el("p", { class: "cap" }, `Ground truth: ${truth.name}. Best Dice: `, el("b", { text: best.label }),
          ` (${fmt(best.dice, 3)}). ${EMPTY_NOTE}`));
    } else this.metricsBox.replaceChildren();
    // Lesion quantities (the columns of smallcovid.app.volume_report.slice_row)
    const q = d.quantities, u = q.unit, scale = q.px_area;
    const area = (px) => (scale == null ? String(px) : fmt(px * scale, 2));
    // % of lung on a lung mask that failed lung QC: marked, never a plain number
    const lungPct = (text) => (q.lung_unreliable && text !== "—" ? `≈ ${text} (unreliable: see lung QC)` : text);
    const head = ["model", "threshold", `lesion area (${u})`, `${d.types["1"]} (${u})`, `${d.types["2"]} (${u})`];
    if (q.lung_px != null) head.push("% of lung");
    head.push("separate lesions", "inference (ms)");
    const body = rows.map((r, i) => {
      const row = [r.label, fmt(r.thr, 2), area(r.area), area(r.area1), area(r.area2)];
      if (q.lung_px != null) row.push(lungPct(q.lung_px ? fmt((100 * r.in_lung) / q.lung_px, 2) : "—"));
      row.push(String(components(this.maps[i].lev, ks[i], d.width, d.height, this.labels, this.parent)), fmt(r.ms, 1));
      return row;
    });
    if (q.truth_row) {
      const t = q.truth_row, cell = (v, dd) => (v == null ? "—" : scale == null && dd === 2 ? String(v) : fmt(v, dd));
      const row = ["ground truth", "—", cell(t[head[2]], 2), cell(t[head[3]], 2), cell(t[head[4]], 2)];
      if (q.lung_px != null) row.push(lungPct(t["% of lung"] == null ? "—" : fmt(t["% of lung"], 2)));
      row.push(t["separate lesions"] == null ? "—" : String(t["separate lesions"]), "—");
      body.push(row);
    }
    const notes = [];
    if (q.lung_px != null) notes.push("% of lung: lesion inside the automatic lung mask over the lung area.");
    if (q.lung_px != null && q.lung_unreliable) notes.push("The lung mask failed lung QC (see the warning above): % of lung is unreliable.");
    if (scale == null) notes.push("Areas are in pixels: this file does not record the pixel spacing.");
    this.statsBox.replaceChildren(el("h3", { text: "Lesion quantities" }), this.table(head, body, null),
      notes.length ? el("p", { class: "cap", text: notes.join(" ") }) : el("span"));
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data || !data.models) return;
  let v = parentElement.__scv;
  if (!v || v.data.key !== data.key) {
    v = parentElement.__scv = new Viewer(parentElement, data);
    v.setStateValue = setStateValue;
    ACTIVE.viewer = v;
    const started = v;
    v.load().then((drawn) => { if (drawn) v.draw(true); }).catch((err) => {
      if (parentElement.__scv !== started) return; // a newer slice has replaced this viewer
      const msg = el("p", { class: "err", text: "The viewer could not start: " + err });
      replaceOwn(parentElement, msg);
    });
  } else {
    v.setStateValue = setStateValue; // same images: keep the controls as the user left them
    ACTIVE.viewer = v;
    if (v.data.volume) v.merge(data);
  }
}

// J / K step through a segmented volume from anywhere on the page (not while typing).
const ACTIVE = (window.__scvActive = window.__scvActive || { viewer: null, bound: false });
if (!ACTIVE.bound) {
  ACTIVE.bound = true;
  window.addEventListener("keydown", (e) => {
    const v = ACTIVE.viewer;
    if (!v || !v.data.volume || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key.toLowerCase();
    if (key !== "j" && key !== "k") return;
    const t = (e.composedPath && e.composedPath()[0]) || e.target;
    if (t && (t.isContentEditable || t.tagName === "TEXTAREA" ||
      (t.tagName === "INPUT" && !["range", "checkbox", "radio", "button"].includes(t.type)))) return;
    if (!v.root.host || !v.root.host.isConnected) return;
    e.preventDefault();
    v.step(key === "j" ? -1 : 1);
  });
}
