// The images of one series as a stack of frames (every frame of every instance, in order): the middle one at
// once as a rendered JPEG, then, on a slow link, every frame as a JPEG so the stack scrolls early, then every
// frame's raw pixels so that scrolling and window/level run locally without a round trip. Frames are fetched
// nearest the one on screen first; a frame is drawn only from its own pixels, and a JPEG stand-in is known for
// what it is: lossy, and rendered at one window, which may not be the one chosen since.
import { Unauthorized, imageBitmap, rawFrame, value } from "./api.js";

export const PRESETS = {
  brain: [40, 80], lung: [-600, 1500], bone: [300, 1500], abdomen: [40, 400], mediastinum: [50, 350],
};

const IN_FLIGHT = 6;
const SLOW_LINK_BYTES_PER_MS = 2000; // under about 16 Mbit/s for the first raw frame: send the JPEGs first
const RAW_RETRY_MS = 700; // a raw frame that fails is asked again once, this long after

function number(meta, tag, fallback) {
  const found = Number(value(meta, tag));
  return Number.isFinite(found) && value(meta, tag) !== undefined ? found : fallback;
}

export class Stack {
  constructor(study, series, instances) {
    this.study = study;
    this.series = series;
    this.items = []; // {meta, frame}: instances sorted by Instance Number, frames in order
    for (const meta of instances) {
      const frames = Math.max(1, number(meta, "00280008", 1));
      for (let frame = 1; frame <= frames; frame++) this.items.push({ meta, frame });
    }
    this.multiframe = this.items.length > instances.length;
    this.raw = new Array(this.items.length);
    this.rendered = new Array(this.items.length); // {picture, key}: a JPEG stand-in and the window it shows
    this.asked = new Map(); // "index|window query" -> the stand-in request under way
    // Failures by kind. A stand-in that failed is not asked again, but its frame's raw pixels still are; a raw
    // frame is asked again once (see loadRaw) before it counts as failed.
    this.failed = new Map(); // index -> the error that kept its raw pixels away
    this.standInFailed = new Map(); // index -> the error that kept its stand-in away
    this.retrying = new Set(); // frames waiting to ask for their raw pixels again
    this.index = Math.floor(this.items.length / 2);
    this.invert = false;
    const first = this.items[this.index].meta;
    // Without a window in the header: the full 8-bit range, or the first raw frame's range (see fetchRaw).
    this.autoWindow = value(first, "00281050") === undefined || value(first, "00281051") === undefined;
    const bits = number(first, "00280101", 16);
    this.window = this.autoWindow ? [2 ** bits / 2, 2 ** bits] : [number(first, "00281050", 40), number(first, "00281051", 400)];
    this.defaultWindow = [...this.window];
    this.loaded = 0;
    this.generation = 0; // bumped when the stack leaves the screen: its loaders stop, what arrived is kept
    this.fetching = new Set();
    this.onProgress = () => {};
    this.onArrive = () => {};
    this.lut = null;
    this.lutKey = "";
  }

  get length() { return this.items.length; }
  get current() { return this.items[this.index]; }
  get complete() { return this.loaded === this.items.length; }

  // Frames per second for cine: Frame Time, Recommended Display Frame Rate or Cine Rate, else 15.
  get frameRate() {
    const meta = this.items[0].meta;
    const frameTime = number(meta, "00181063", 0);
    if (frameTime > 0) return Math.min(60, Math.round(1000 / frameTime));
    return Math.min(60, number(meta, "00082144", 0) || number(meta, "00180040", 0) || 15);
  }

  path(i) {
    const { meta, frame } = this.items[i];
    return `/dicom-web/studies/${this.study}/series/${this.series}/instances/${value(meta, "00080018")}/frames/${frame}`;
  }

  async first() {
    if (!this.raw[this.index] && !this.rendered[this.index]) {
      await this.standIn(this.index, "").catch((error) => {
        if (error instanceof Unauthorized) throw error;
        this.failStandIn(this.index, error); // its raw pixels come next all the same
      });
    }
    performance.mark("pacsgw:first-image");
  }

  // Windows as "center,width", or "auto" for one taken from the pixels' own range, not yet known here.
  // The reader's: "auto" while it is the default of a series without one in its header, until a raw frame gives it.
  chosenWindow() {
    const [center, width] = this.window;
    return this.autoWindow && center === this.defaultWindow[0] && width === this.defaultWindow[1] ? "auto" : `${center},${width}`;
  }

  // The one the server renders frame i at when asked for none: its header's, else its own range.
  headerWindowOf(i) {
    const meta = this.items[i].meta;
    if (value(meta, "00281050") === undefined || value(meta, "00281051") === undefined) return "auto";
    return `${number(meta, "00281050", 0)},${number(meta, "00281051", 0)}`;
  }

  // What to ask the server for to render frame i at the chosen window: nothing (so the first image's request
  // stays the plain one) when its default is that window.
  windowQuery(i) {
    const chosen = this.chosenWindow();
    return chosen === "auto" || chosen === this.headerWindowOf(i) ? "" : chosen;
  }

  // Whether asking again would bring frame i's stand-in nearer the chosen window than the one it has.
  betterRendering(i) {
    const standIn = this.rendered[i];
    return Boolean(standIn) && (this.windowQuery(i) || this.headerWindowOf(i)) !== standIn.key;
  }

  // What drawing frame i would show: its raw pixels, a JPEG stand-in (with the window it was rendered at), or nothing.
  picture(i = this.index) {
    if (this.raw[i]) return { fidelity: "raw" };
    const standIn = this.rendered[i];
    return standIn ? { fidelity: "preview", key: standIn.key } : null;
  }

  // The frame on screen wants its pixels now, ahead of the queue: on a fast link (or when its stand-in failed) its
  // raw pixels, else a stand-in. One such request at a time, then the latest frame wanted: scrolling fast does not
  // ask for every frame passed.
  want(i) {
    this.wanted = i;
    if (this.wanting) return;
    const ask = () => {
      const j = this.wanted;
      this.wanting = null;
      if (j !== this.index || !this.rawNeeded(j)) return;
      if (this.slow === false || this.standInFailed.has(j)) this.wanting = this.loadRaw(j);
      else if (!this.rendered[j] && !this.asking(j)) this.wanting = this.askStandIn(j);
      this.wanting?.finally(ask);
    };
    ask();
  }

  // Whether frame i's raw pixels are still to be asked for: not here, not on their way, not failed.
  rawNeeded(i) {
    return !this.raw[i] && !this.fetching.has(i) && !this.retrying.has(i) && !this.failed.has(i);
  }

  fail(i, error) {
    this.failed.set(i, error);
    this.onArrive(i);
  }

  failStandIn(i, error) {
    this.standInFailed.set(i, error);
    this.onArrive(i);
  }

  // Opened again: whatever failed is asked for again.
  forgetFailures() {
    this.failed.clear();
    this.standInFailed.clear();
  }

  cancel() { this.generation += 1; }

  async loadAll() {
    const generation = this.generation;
    if (this.slow === undefined) {
      const took = await this.loadRaw(this.index);
      this.slow = this.raw[this.index]?.byteLength / Math.max(1, took) < SLOW_LINK_BYTES_PER_MS;
    }
    await this.pool(generation);
    if (generation !== this.generation) return;
    if (this.failed.size) throw this.failed.values().next().value;
    if (this.complete) performance.mark("pacsgw:full-fidelity");
  }

  // IN_FLIGHT requests at a time, each for the frame nearest the one on screen that still needs something: on a
  // slow link its stand-in while any frame lacks one, then its raw pixels. Scrolling or jumping away brings the new
  // neighbourhood first; a frame slow to come holds up one request, not the others. A stand-in that fails is not
  // asked again (the raw pixels still are); a raw frame that fails is asked again once (see loadRaw).
  async pool(generation) {
    const bare = (i) => this.rawNeeded(i) && !this.rendered[i] && !this.asking(i) && !this.standInFailed.has(i);
    const job = () => {
      const standIn = this.slow ? this.nearest(bare) : -1;
      if (standIn >= 0) return () => this.askStandIn(standIn);
      const next = this.nearest((i) => this.rawNeeded(i));
      return next >= 0 ? () => this.loadRaw(next) : null;
    };
    const worker = async () => {
      for (let found = job(); found && generation === this.generation; found = job()) await found();
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  }

  nearest(needed) {
    let best = -1;
    for (let i = 0; i < this.items.length; i++) {
      if (needed(i) && (best < 0 || Math.abs(i - this.index) < Math.abs(best - this.index))) best = i;
    }
    return best;
  }

  asking(i) {
    for (const key of this.asked.keys()) if (key.startsWith(`${i}|`)) return true;
    return false;
  }

  // Frame i rendered by the server (at a window, see windowQuery), kept as its stand-in until its raw pixels come;
  // one request per frame and window however many ask.
  standIn(i, window, quality = "quality=75") {
    const ask = `${i}|${window}`;
    const key = window || this.headerWindowOf(i);
    if (!this.asked.has(ask)) {
      const query = [window && `window=${window}`, quality].filter(Boolean).join("&");
      const request = imageBitmap(`${this.path(i)}/rendered${query ? `?${query}` : ""}`).then((picture) => {
        if (this.raw[i]) { picture.close(); return; }
        this.rendered[i]?.picture.close();
        this.rendered[i] = { picture, key };
        this.standInFailed.delete(i);
        this.onArrive(i);
      }).finally(() => this.asked.delete(ask));
      this.asked.set(ask, request);
    }
    return this.asked.get(ask);
  }

  // Frame i's stand-in at the chosen window; a failure is recorded as the stand-in's, never thrown.
  askStandIn(i) {
    return this.standIn(i, this.windowQuery(i)).catch((error) => this.failStandIn(i, error));
  }

  // Frame i's raw pixels, asked again once after RAW_RETRY_MS if they fail (a transient error on a poor link),
  // then recorded as failed; never throws. Answers how long the request that brought them took, in ms.
  async loadRaw(i) {
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        await this.fetchRaw(i);
        return performance.now() - started;
      } catch (error) {
        if (attempt > 1 || error instanceof Unauthorized) { this.fail(i, error); return undefined; }
      }
      this.retrying.add(i);
      await new Promise((resolve) => setTimeout(resolve, RAW_RETRY_MS));
      this.retrying.delete(i);
    }
  }

  async fetchRaw(i) {
    if (this.raw[i] || this.fetching.has(i)) return;
    this.fetching.add(i);
    let buffer;
    try {
      buffer = await rawFrame(this.path(i));
    } finally {
      this.fetching.delete(i);
    }
    const meta = this.items[i].meta;
    const bits = number(meta, "00280100", 16);
    const signed = number(meta, "00280103", 0) === 1;
    this.raw[i] = bits === 8 ? new Uint8Array(buffer) : signed ? new Int16Array(buffer) : new Uint16Array(buffer);
    if (this.autoWindow && bits > 8) {
      this.autoWindow = false;
      let [low, high] = [Infinity, -Infinity];
      for (const v of this.raw[i]) { if (v < low) low = v; if (v > high) high = v; }
      const slope = number(meta, "00281053", 1);
      const intercept = number(meta, "00281052", 0);
      [low, high] = [low * slope + intercept, high * slope + intercept].sort((a, b) => a - b);
      const untouched = this.window[0] === this.defaultWindow[0] && this.window[1] === this.defaultWindow[1];
      this.defaultWindow = [(low + high) / 2, Math.max(1, high - low)];
      if (untouched) this.window = [...this.defaultWindow]; // a window the reader chose meanwhile stays
    }
    this.rendered[i]?.picture.close(); // the raw pixels supersede the JPEG
    this.rendered[i] = null;
    this.failed.delete(i);
    this.standInFailed.delete(i);
    this.loaded += 1;
    this.onArrive(i);
    this.onProgress();
  }

  show(index) { this.index = Math.max(0, Math.min(this.items.length - 1, index)); }

  setWindow(center, width) { this.window = [center, Math.max(1, width)]; }

  // Modality values of a frame (raw * slope + intercept), or null until its raw pixels arrive.
  modalityValues(i = this.index) {
    const raw = this.raw[i];
    if (!raw) return null;
    const meta = this.items[i].meta;
    return { raw, slope: number(meta, "00281053", 1), intercept: number(meta, "00281052", 0), columns: number(meta, "00280011", 0) };
  }

  // One lookup table from stored value to grey (packed RGBA), rebuilt only when the window changes.
  table(meta, raw) {
    const slope = number(meta, "00281053", 1);
    const intercept = number(meta, "00281052", 0);
    const mono1 = value(meta, "00280004") === "MONOCHROME1";
    const offset = raw instanceof Int16Array ? 32768 : 0;
    const size = raw instanceof Uint8Array ? 256 : 65536;
    const key = [slope, intercept, mono1, this.invert, ...this.window, size, offset].join();
    if (key !== this.lutKey) {
      const [center, width] = this.window;
      const low = center - width / 2;
      const lut = new Uint32Array(size);
      for (let stored = 0; stored < size; stored++) {
        let level = Math.round((((stored - offset) * slope + intercept - low) / width) * 255);
        level = level < 0 ? 0 : level > 255 ? 255 : level;
        if (mono1 !== this.invert) level = 255 - level;
        lut[stored] = 0xff000000 | (level << 16) | (level << 8) | level; // little-endian RGBA
      }
      this.lut = { lut, offset };
      this.lutKey = key;
    }
    return this.lut;
  }

  // Draws the current frame on the canvas at its own size, from its own pixels only: with nothing of it arrived
  // yet, the canvas is cleared. Answers what was drawn, as picture() does.
  draw(canvas) {
    const context = canvas.getContext("2d");
    const raw = this.raw[this.index];
    const meta = this.current.meta;
    const columns = number(meta, "00280011", 0);
    const rows = number(meta, "00280010", 0);
    if (!raw) {
      const picture = this.rendered[this.index]?.picture;
      const [width, height] = picture ? [picture.width, picture.height] : [columns, rows];
      if (canvas.width !== width || canvas.height !== height) [canvas.width, canvas.height] = [width, height];
      context.clearRect(0, 0, canvas.width, canvas.height);
      if (!picture) return null;
      context.filter = this.invert ? "invert(1)" : "none";
      context.drawImage(picture, 0, 0);
      context.filter = "none";
      return this.picture();
    }
    if (canvas.width !== columns || canvas.height !== rows) [canvas.width, canvas.height] = [columns, rows];
    if (this.out?.width !== columns || this.out?.height !== rows) {
      this.out = context.createImageData(columns, rows); // reused from frame to frame: no allocation while scrolling
      this.outPixels = new Uint32Array(this.out.data.buffer);
    }
    const out = this.out;
    const pixels = this.outPixels;
    if (number(meta, "00280002", 1) === 3) {
      const planar = number(meta, "00280006", 0) === 1;
      const plane = rows * columns;
      for (let i = 0; i < plane; i++) {
        const [r, g, b] = planar ? [raw[i], raw[i + plane], raw[i + 2 * plane]] : [raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]];
        const pixel = 0xff000000 | (b << 16) | (g << 8) | r;
        pixels[i] = this.invert ? pixel ^ 0x00ffffff : pixel;
      }
    } else {
      const { lut, offset } = this.table(meta, raw);
      for (let i = 0; i < pixels.length; i++) pixels[i] = lut[raw[i] + offset];
    }
    context.putImageData(out, 0, 0);
    return this.picture();
  }
}
