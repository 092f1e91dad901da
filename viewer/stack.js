// A stack viewport: the middle slice at once (rendered JPEG), then every slice's raw pixels in the
// background, so that scrolling and window/level run locally without a round trip.
import { imageURL, rawFrame, value } from "./api.js";

export const PRESETS = {
  brain: [40, 80], lung: [-600, 1500], bone: [300, 1500], abdomen: [40, 400], mediastinum: [50, 350],
};

export class Stack {
  constructor(canvas, study, series, instances, onChange) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.study = study;
    this.series = series;
    this.instances = instances; // metadata, sorted by Instance Number
    this.onChange = onChange;
    this.pixels = new Array(instances.length);
    this.index = Math.floor(instances.length / 2);
    this.invert = false;
    const first = instances[this.index];
    this.window = [Number(value(first, "00281050") ?? 40), Number(value(first, "00281051") ?? 400)];
    this.loaded = 0;
  }

  get current() { return this.instances[this.index]; }

  async start() {
    const uid = value(this.current, "00080018");
    const url = await imageURL(`/dicom-web/studies/${this.study}/series/${this.series}/instances/${uid}/rendered`);
    const image = new Image();
    image.src = url;
    await image.decode();
    this.canvas.width = image.naturalWidth;
    this.canvas.height = image.naturalHeight;
    if (!this.pixels[this.index]) this.context.drawImage(image, 0, 0);
    this.onChange();
    this.loadAll();
  }

  async loadAll() {
    const order = [...this.instances.keys()].sort((a, b) => Math.abs(a - this.index) - Math.abs(b - this.index));
    const next = async () => {
      while (order.length) {
        const i = order.shift();
        const meta = this.instances[i];
        const buffer = await rawFrame(this.study, this.series, value(meta, "00080018"));
        const signed = Number(value(meta, "00280103")) === 1;
        this.pixels[i] = Number(value(meta, "00280100")) === 8 ? new Uint8Array(buffer)
          : signed ? new Int16Array(buffer) : new Uint16Array(buffer);
        this.loaded += 1;
        if (i === this.index) this.draw();
        this.onChange();
      }
    };
    await Promise.all([next(), next(), next(), next()]);
  }

  scroll(delta) { this.show(this.index + delta); }

  show(index) {
    this.index = Math.max(0, Math.min(this.instances.length - 1, index));
    this.draw();
    this.onChange();
  }

  setWindow(center, width) {
    this.window = [center, Math.max(1, width)];
    this.draw();
    this.onChange();
  }

  draw() {
    const raw = this.pixels[this.index];
    const meta = this.current;
    if (!raw) return; // the rendered image stays until the raw pixels arrive
    const columns = Number(value(meta, "00280011"));
    const rows = Number(value(meta, "00280010"));
    if (this.canvas.width !== columns || this.canvas.height !== rows) {
      this.canvas.width = columns;
      this.canvas.height = rows;
    }
    const slope = Number(value(meta, "00281053") ?? 1);
    const intercept = Number(value(meta, "00281052") ?? 0);
    const [center, width] = this.window;
    const low = center - width / 2;
    const monochrome1 = value(meta, "00280004") === "MONOCHROME1";
    const out = this.context.createImageData(columns, rows);
    for (let i = 0; i < rows * columns; i++) {
      let level = ((raw[i] * slope + intercept - low) / width) * 255;
      level = level < 0 ? 0 : level > 255 ? 255 : level;
      if (monochrome1 !== this.invert) level = 255 - level;
      out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = level;
      out.data[4 * i + 3] = 255;
    }
    this.context.putImageData(out, 0, 0);
    this.afterDraw?.(this.context);
  }
}
