// The images of one series as a stack of frames (every frame of every instance, in order): the middle one at
// once as a rendered JPEG, then, on a slow link, every frame as a JPEG so the stack scrolls early, then every
// frame's raw pixels so that scrolling and window/level run locally without a round trip.
import { imageBitmap, rawFrame, value } from "./api.js";

export const PRESETS = {
  brain: [40, 80], lung: [-600, 1500], bone: [300, 1500], abdomen: [40, 400], mediastinum: [50, 350],
};

const IN_FLIGHT = 6;
const SLOW_LINK_BYTES_PER_MS = 2000; // under about 16 Mbit/s for the first raw frame: send the JPEGs first

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
    this.rendered = new Array(this.items.length);
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
      this.rendered[this.index] = await imageBitmap(`${this.path(this.index)}/rendered`);
    }
    performance.mark("pacsgw:first-image");
  }

  cancel() { this.generation += 1; }

  // Nearest slices first, so the neighbourhood of the slice on screen is ready first.
  order() {
    return [...this.items.keys()].sort((a, b) => Math.abs(a - this.index) - Math.abs(b - this.index));
  }

  async loadAll() {
    const generation = this.generation;
    if (this.slow === undefined) {
      const started = performance.now();
      await this.fetchRaw(this.index);
      this.slow = this.raw[this.index]?.byteLength / Math.max(1, performance.now() - started) < SLOW_LINK_BYTES_PER_MS;
    }
    if (this.slow) await this.pool(this.order().filter((i) => !this.raw[i] && !this.rendered[i]), (i) => this.fetchRendered(i), generation);
    await this.pool(this.order().filter((i) => !this.raw[i]), (i) => this.fetchRaw(i), generation);
    if (generation === this.generation && this.complete) performance.mark("pacsgw:full-fidelity");
  }

  async pool(queue, work, generation) {
    const next = async () => {
      while (queue.length && generation === this.generation) await work(queue.shift());
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, next));
  }

  async fetchRendered(i) {
    const picture = await imageBitmap(`${this.path(i)}/rendered?quality=75`); // a stand-in until the raw pixels come
    if (this.raw[i]) return;
    this.rendered[i] = picture;
    this.onArrive(i);
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
      this.window = [(low + high) / 2, Math.max(1, high - low)];
      this.defaultWindow = [...this.window];
    }
    this.rendered[i] = null; // the raw pixels supersede the JPEG
    this.loaded += 1;
    this.onArrive(i);
    this.onProgress();
  }

  show(index) { this.index = Math.max(0, Math.min(this.items.length - 1, index)); }

  setWindow(center, width) { this.window = [center, Math.max(1, width)]; }

  // Modality values of the current frame (raw * slope + intercept), or null until its raw pixels arrive.
  modalityValues() {
    const raw = this.raw[this.index];
    if (!raw) return null;
    const meta = this.current.meta;
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

  // Draws the current frame on the canvas at its own size; false when nothing of it has arrived yet.
  draw(canvas) {
    const context = canvas.getContext("2d");
    const raw = this.raw[this.index];
    const meta = this.current.meta;
    if (!raw) {
      const picture = this.rendered[this.index];
      if (!picture) return false;
      if (canvas.width !== picture.width || canvas.height !== picture.height) [canvas.width, canvas.height] = [picture.width, picture.height];
      context.filter = this.invert ? "invert(1)" : "none";
      context.drawImage(picture, 0, 0);
      context.filter = "none";
      return true;
    }
    const columns = number(meta, "00280011", 0);
    const rows = number(meta, "00280010", 0);
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
    return true;
  }
}
