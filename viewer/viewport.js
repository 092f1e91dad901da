// One viewport of the reading layout: a series' stack on a canvas, its overlay and orientation markers, the
// pointer and touch interactions (tools, pinch and two-finger pan), measurements per frame, and cine.
// The canvas only ever shows the pixels of the frame the overlay names: until they arrive it is cleared and says
// it is loading; a lossy JPEG stand-in carries a badge, and is rendered again at the window chosen.
import { seriesMetadata, value } from "./api.js";
import { date, element, personName } from "./dom.js";
import { t } from "./i18n.js";
import { angle, describe, drawMeasurements, roiStatistics, toImage } from "./measure.js";
import { markers } from "./orientation.js";
import { Stack } from "./stack.js";
import { View } from "./view.js";

const KEEP_STACKS = 3; // a 300-slice CT is 150 MiB of raw pixels
const RERENDER_MS = 150; // a stand-in is rendered again at a new window once the window rests this long
const list = (meta, tag) => (meta?.[tag]?.Value || []).join("\\");

export class Viewport {
  constructor(number, tools, { onActivate, onProgress, onMeasure }) {
    const suffix = number === 1 ? "" : `-${number}`;
    this.tools = tools; // shared with the toolbar: {current: "window" | "pan" | "scroll" | "zoom" | "length" | "angle" | "roi"}
    this.onActivate = onActivate;
    this.onProgress = onProgress;
    this.onMeasure = onMeasure;
    this.canvas = element("canvas", { id: `viewport${suffix}`, class: "viewport" });
    this.corners = Object.fromEntries(["tl", "tr", "bl", "br"].map((c) => [c, element("div", { class: `corner ${c}` })]));
    this.edges = Object.fromEntries(["top", "bottom", "left", "right"].map((e) => [e, element("span", { class: `marker ${e}` })]));
    this.loading = element("div", { id: `loading${suffix}`, class: "loading", role: "status", hidden: true });
    this.lossy = element("span", { id: `lossy${suffix}`, class: "lossy", hidden: true }, t("lossyPreview"));
    this.frame = element("div", { id: `frame${suffix}`, class: "frame" }, this.canvas, Object.values(this.corners), Object.values(this.edges),
      this.loading, this.lossy);
    this.status = element("p", { id: `status${suffix}`, class: "status", "aria-live": "polite" });
    this.slider = element("input", { id: `slice${suffix}`, class: "slice", type: "range", min: "0", value: "0", "aria-label": t("slice") });
    this.play = element("button", { type: "button", class: "play", onclick: () => this.toggleCine() }, "▶");
    this.fps = element("input", { type: "number", class: "fps", min: "1", max: "60", value: "15", "aria-label": "fps" });
    this.cineBar = element("span", { class: "cine", hidden: true }, this.play, this.fps, " fps");
    this.root = element("section", { class: "cell" }, this.frame, this.slider, element("div", { class: "cellbar" }, this.status, this.cineBar));
    this.view = new View(this.canvas);
    this.view.onChange = () => this.decorate();
    this.stack = null;
    this.positions = new Map(); // slice shown per series, kept while the study is open
    this.recent = new Map(); // series UID -> Stack: going back to a series does not fetch it again
    this.measurements = new Map(); // "series:index" -> measurements on that frame
    this.preview = null;
    this.angleArm = null;
    this.overlay = true;
    this.cine = null;
    this.loads = 0; // the latest load(): an earlier one still under way gives way
    this.listen();
  }

  get key() { return this.stack ? `${this.stack.series}:${this.stack.index}` : ""; }
  get currentMeasurements() { return this.measurements.get(this.key) || []; }

  async load(study, seriesItem, { prior = false } = {}) {
    const ticket = ++this.loads;
    const studyUid = value(study, "0020000D");
    const seriesUid = value(seriesItem, "0020000E");
    this.stopCine();
    if (this.stack) {
      this.positions.set(this.stack.series, this.stack.index);
      this.stack.cancel();
    }
    // The previous series leaves the screen at once: nothing of it stays under the new series' overlay.
    Object.assign(this, { stack: null, study, seriesItem, prior, angleArm: null, preview: null });
    this.paint();
    this.onMeasure();
    try {
      let stack = this.recent.get(seriesUid);
      if (!stack) {
        const metadata = await seriesMetadata(studyUid, seriesUid);
        if (ticket !== this.loads) return;
        metadata.sort((a, b) => Number(value(a, "00200013") ?? 0) - Number(value(b, "00200013") ?? 0));
        stack = new Stack(studyUid, seriesUid, metadata);
      }
      this.recent.delete(seriesUid);
      this.recent.set(seriesUid, stack); // most recent last; the oldest beyond KEEP_STACKS is let go
      while (this.recent.size > KEEP_STACKS) this.recent.delete(this.recent.keys().next().value);
      this.stack = stack;
      stack.forgetFailures(); // opened again: what failed is asked for again
      if (this.positions.has(seriesUid)) stack.show(this.positions.get(seriesUid));
      stack.onArrive = (i) => {
        this.settle(stack, i);
        if (this.stack === stack && i === stack.index) this.draw();
      };
      stack.onProgress = () => { if (this.stack === stack) this.decorate(); this.onProgress(stack); };
      stack.items.forEach((_, i) => this.settle(stack, i));
      this.slider.max = String(stack.length - 1);
      this.fps.value = String(stack.frameRate);
      this.cineBar.hidden = !stack.multiframe;
      this.view.reset();
      this.draw();
      await stack.first();
      if (this.stack !== stack) return;
      this.draw();
      stack.loadAll().catch((error) => { this.status.textContent = `${t("loadFailed")}: ${error.message}`; });
    } catch (error) {
      if (ticket === this.loads) this.loading.textContent = `${t("loadFailed")}: ${error.message}`;
      throw error;
    }
  }

  show(index) {
    if (!this.stack) return;
    this.stack.show(index);
    this.angleArm = null;
    this.draw();
    this.onMeasure();
  }

  scroll(delta) { if (this.stack) this.show(this.stack.index + delta); }

  setWindow(center, width) {
    if (!this.stack) return;
    this.stack.setWindow(center, width);
    this.draw();
  }

  toggleInvert() {
    if (!this.stack) return;
    this.stack.invert = !this.stack.invert;
    this.draw();
  }

  // The text at once; the pixels at the next animation frame, once however many events asked for them.
  draw() {
    if (!this.stack) return;
    this.decorate();
    if (!this.painting) this.painting = requestAnimationFrame(() => this.paint());
  }

  // The current frame from its own pixels, or a cleared canvas saying it is loading. data-slice names the frame
  // whose pixels are on the canvas ("" for none), data-fidelity says whether they are the raw pixels or a preview.
  paint() {
    this.painting = 0;
    const stack = this.stack;
    const drawn = stack ? stack.draw(this.canvas) : null;
    if (!stack) this.canvas.getContext("2d").clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.canvas.dataset.slice = drawn ? `${stack.series}:${stack.index}` : "";
    this.canvas.dataset.fidelity = drawn?.fidelity ?? "";
    this.lossy.hidden = drawn?.fidelity !== "preview";
    this.loading.hidden = Boolean(drawn);
    this.decorate();
    if (!drawn) {
      const failed = stack?.failed.get(stack.index);
      this.loading.textContent = failed ? `${t("loadFailed")}: ${failed.message}` : t("loadingSlice");
      stack?.want(stack.index);
      return;
    }
    drawMeasurements(this.canvas.getContext("2d"), this.preview ? [...this.currentMeasurements, this.preview] : this.currentMeasurements);
    if (drawn.fidelity === "preview" && stack.betterRendering(stack.index)) this.rerender();
  }

  // The stand-in on screen is rendered again at the chosen window once the window rests; it is drawn when it
  // comes only if its frame is still the one on screen (see onArrive).
  rerender() {
    clearTimeout(this.rerendering);
    const stack = this.stack;
    const index = stack.index;
    const window = stack.windowQuery(index);
    this.rerendering = setTimeout(() => {
      if (this.stack !== stack || stack.index !== index || stack.windowQuery(index) !== window || stack.raw[index]) return;
      stack.standIn(index, window, "").catch(() => {}); // the stand-in at the old window stays, marked as such
    }, RERENDER_MS);
  }

  // ROI statistics measured before the raw pixels came are computed now, from the raw pixels (never the JPEG).
  settle(stack, i) {
    const key = `${stack.series}:${i}`;
    const values = stack.modalityValues(i);
    const measured = this.measurements.get(key);
    if (!values || !measured?.some((m) => m.pending)) return;
    const meta = stack.items[i].meta;
    this.measurements.set(key, measured.map((m) => {
      if (!m.pending) return m;
      const stats = roiStatistics(m.a, m.b, values, meta);
      return { ...m, pending: false, label: stats ? stats.label : "—" };
    }));
    if (this.stack === stack) this.onMeasure();
  }

  // The window as the pixels on screen show it: marked "preview" while they are a stand-in rendered at another
  // window than the one named (or at the server's own choice from the pixels' range).
  windowText(stack) {
    const shown = stack.picture();
    if (shown?.fidelity === "preview" && shown.key === "auto") return `W/L ${t("auto")} (${t("preview")})`;
    const stale = shown?.fidelity === "preview" && shown.key !== stack.chosenWindow();
    return `W ${Math.round(stack.window[1])} L ${Math.round(stack.window[0])}${stale ? ` (${t("preview")})` : ""}`;
  }

  // The text around the image: overlay corners, orientation markers, slice and loading status, slider.
  decorate() {
    const stack = this.stack;
    const study = this.study;
    if (!study) return;
    const fill = (corner, lines) => {
      const text = lines.filter(Boolean).join("\n"); // shown with white-space: pre-line; rewritten only when it changes
      if (this.corners[corner].textContent !== text) this.corners[corner].textContent = text;
    };
    this.frame.classList.toggle("bare", !this.overlay);
    fill("tl", [personName(value(study, "00100010")), value(study, "00100020"),
      [date(value(study, "00100030")), value(study, "00100040")].filter(Boolean).join(" · ")]);
    fill("tr", [this.prior ? t("prior") : "", date(value(study, "00080020")), value(study, "00081030"), value(study, "00080050")]);
    const seriesLine = `${t("series")} ${value(this.seriesItem, "00200011") ?? ""} ${value(this.seriesItem, "0008103E") ?? ""}`;
    if (!stack) { // the series' metadata is on its way
      fill("bl", [seriesLine]);
      fill("br", []);
      Object.values(this.edges).forEach((span) => { span.textContent = ""; });
      this.status.textContent = t("loadingSlice");
      return;
    }
    const meta = stack.current.meta;
    const location = value(meta, "00201041");
    const thickness = value(meta, "00180050");
    fill("bl", [seriesLine, `${t("image")} ${stack.index + 1}/${stack.length}`,
      location !== undefined ? `${t("location")} ${Number(location).toFixed(1)} mm` : "",
      thickness !== undefined ? `${t("thickness")} ${thickness} mm` : ""]);
    fill("br", [this.windowText(stack), `${t("zoom")} ${Math.round(this.view.zoom * 100)}%`,
      list(meta, "00280030") ? `${list(meta, "00280030")} mm/px` : ""]);
    const found = markers(meta, this.view);
    for (const [edge, span] of Object.entries(this.edges)) {
      const letter = found?.[edge] ?? "";
      if (span.textContent !== letter) span.textContent = letter;
    }
    this.slider.value = String(stack.index);
    this.status.textContent = `${t("slice")} ${stack.index + 1}/${stack.length} · ${this.windowText(stack)}`
      + (stack.complete ? "" : ` · ${t("loading")} ${stack.loaded}/${stack.length}`)
      + (stack.failed.size ? ` · ${t("loadFailed")} ${stack.failed.size}` : "");
  }

  toggleCine() { this.cine ? this.stopCine() : this.startCine(); }

  startCine() {
    if (!this.stack || this.stack.length < 2) return;
    let last = performance.now();
    let owed = 0;
    const tick = (now) => {
      if (!this.cine) return;
      owed += ((now - last) / 1000) * Math.min(60, Math.max(1, Number(this.fps.value) || 15));
      last = now;
      if (owed >= 1) {
        const step = Math.floor(owed);
        owed -= step;
        this.stack.show((this.stack.index + step) % this.stack.length);
        this.draw();
      }
      this.cine = requestAnimationFrame(tick);
    };
    this.cine = requestAnimationFrame(tick);
    this.play.textContent = "⏸";
  }

  stopCine() {
    if (this.cine) cancelAnimationFrame(this.cine);
    this.cine = null;
    this.play.textContent = "▶";
  }

  clearMeasurements() {
    this.measurements.delete(this.key);
    this.angleArm = null;
    this.draw();
    this.onMeasure();
  }

  addMeasurement(measurement) {
    this.measurements.set(this.key, [...this.currentMeasurements, measurement]);
    this.onMeasure();
  }

  // Mouse, pen and touch through pointer events: one pointer uses the current tool (shift or the middle button
  // pans), two pointers pinch to zoom and move together to pan.
  listen() {
    const canvas = this.canvas;
    const pointers = new Map();
    let drag = null;
    let pinch = null;
    const spread = () => {
      const [p, q] = [...pointers.values()];
      return { distance: Math.hypot(p.x - q.x, p.y - q.y) || 1, x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 };
    };
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    canvas.addEventListener("wheel", (event) => { event.preventDefault(); this.onActivate(this); this.scroll(Math.sign(event.deltaY)); }, { passive: false });
    this.slider.addEventListener("input", () => this.show(Number(this.slider.value)));
    this.fps.addEventListener("change", () => { this.fps.value = String(Math.min(60, Math.max(1, Number(this.fps.value) || 15))); });
    canvas.addEventListener("pointerdown", (event) => {
      this.onActivate(this);
      if (!this.stack) return;
      canvas.setPointerCapture(event.pointerId);
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pointers.size === 2) {
        drag = null;
        this.preview = null;
        pinch = { ...spread(), zoom: this.view.zoom, panX: this.view.panX, panY: this.view.panY };
        return;
      }
      const tool = event.shiftKey || event.button === 1 ? "pan" : event.button === 2 ? "zoom" : this.tools.current;
      drag = { x: event.clientX, y: event.clientY, startY: event.clientY, tool, window: [...this.stack.window],
        index: this.stack.index, zoom: this.view.zoom, from: toImage(event, canvas, this.view) };
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!pointers.has(event.pointerId) || !this.stack) return;
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pinch && pointers.size >= 2) {
        const now = spread();
        this.view.zoom = Math.min(16, Math.max(0.1, (pinch.zoom * now.distance) / pinch.distance));
        this.view.panX = pinch.panX + now.x - pinch.x;
        this.view.panY = pinch.panY + now.y - pinch.y;
        this.view.apply();
        return;
      }
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.startY;
      const point = toImage(event, canvas, this.view);
      if (drag.tool === "window") this.setWindow(drag.window[0] + dy * 2, drag.window[1] + dx * 4);
      else if (drag.tool === "pan") {
        this.view.panBy(dx, event.clientY - drag.y);
        drag.x = event.clientX;
        drag.y = event.clientY;
      } else if (drag.tool === "scroll") {
        const step = Math.max(2, this.frame.clientHeight / this.stack.length);
        if (this.stack.index !== drag.index + Math.round(dy / step)) this.show(drag.index + Math.round(dy / step));
      } else if (drag.tool === "zoom") {
        this.view.zoom = Math.min(16, Math.max(0.1, drag.zoom * Math.exp(-dy / 200)));
        this.view.apply();
      } else if (drag.tool === "length" || drag.tool === "roi" || (drag.tool === "angle" && !this.angleArm)) {
        this.preview = { kind: drag.tool === "roi" ? "roi" : "length", a: drag.from, b: point, label: "" };
        this.draw();
      } else if (drag.tool === "angle") {
        this.preview = { kind: "angle", ...this.angleArm, c: point, label: "" };
        this.draw();
      }
    });
    const release = (event) => {
      pointers.delete(event.pointerId);
      if (pointers.size < 2) pinch = null;
      if (!drag || !this.stack || event.type === "pointercancel") { drag = null; this.preview = null; return; }
      const to = toImage(event, canvas, this.view);
      const moved = Math.hypot(to.x - drag.from.x, to.y - drag.from.y) > 1;
      const meta = this.stack.current.meta;
      if (drag.tool === "length" && moved) this.addMeasurement({ kind: "length", a: drag.from, b: to, label: describe(drag.from, to, meta) });
      if (drag.tool === "roi" && moved) {
        // Never from a JPEG stand-in's grey levels: until the raw pixels come, no value, and the reason why.
        const values = this.stack.modalityValues();
        const stats = roiStatistics(drag.from, to, values, meta);
        this.addMeasurement({ kind: "roi", a: drag.from, b: to, pending: !values, label: stats ? stats.label : values ? "—" : `— (${t("roiWaiting")})` });
      }
      if (drag.tool === "angle") {
        if (this.angleArm) {
          this.addMeasurement({ kind: "angle", ...this.angleArm, c: to, label: angle(this.angleArm.a, this.angleArm.b, to, meta) });
          this.angleArm = null;
        } else if (moved) this.angleArm = { a: drag.from, b: to };
      }
      this.preview = this.angleArm ? { kind: "angle", ...this.angleArm, label: "" } : null;
      drag = null;
      this.draw();
    };
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
  }
}
