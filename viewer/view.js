// How the viewport shows its canvas: zoom, pan, rotation and flips, as one CSS transform.
export class View {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset();
  }

  reset() {
    this.zoom = 1; // 1 is "fit": the canvas fills the stage as CSS lays it out
    this.panX = 0;
    this.panY = 0;
    this.rotation = 0;
    this.flipH = false;
    this.flipV = false;
    this.apply();
  }

  actualSize() {
    // The canvas fits its frame (object-fit: contain); one image pixel per screen pixel undoes that fit.
    const box = this.canvas.getBoundingClientRect();
    const fit = Math.min(box.width / this.zoom / this.canvas.width, box.height / this.zoom / this.canvas.height);
    this.zoom = fit > 0 ? 1 / fit : 1;
    this.apply();
  }

  zoomBy(factor) {
    this.zoom = Math.min(16, Math.max(0.1, this.zoom * factor));
    this.apply();
  }

  panBy(dx, dy) {
    this.panX += dx;
    this.panY += dy;
    this.apply();
  }

  rotate() {
    this.rotation = (this.rotation + 90) % 360;
    this.apply();
  }

  flip(horizontal) {
    if (horizontal) this.flipH = !this.flipH; else this.flipV = !this.flipV;
    this.apply();
  }

  // A screen direction (or offset from the centre) as a direction in image pixel axes.
  toImageDirection(x, y) {
    const angle = (-this.rotation * Math.PI) / 180;
    [x, y] = [x * Math.cos(angle) - y * Math.sin(angle), x * Math.sin(angle) + y * Math.cos(angle)];
    return [this.flipH ? -x : x, this.flipV ? -y : y];
  }

  apply() {
    const sx = (this.flipH ? -1 : 1) * this.zoom;
    const sy = (this.flipV ? -1 : 1) * this.zoom;
    this.canvas.style.transform = `translate(${this.panX}px, ${this.panY}px) rotate(${this.rotation}deg) scale(${sx}, ${sy})`;
    this.onChange?.();
  }
}

export const SHORTCUTS = [
  ["↑ ↓ / wheel / scroll tool", "slice"], ["Home / End", "firstLast"], ["+ −", "zoom"], ["0", "fit"], ["1", "1:1"],
  ["r", "rotate"], ["h / v", "flip"], ["i", "invert"], ["w", "window/level"], ["s", "scrollTool"], ["l", "length"],
  ["a", "angle"], ["o", "roi"], ["Delete", "clearMeasurements"], ["space", "cine"], ["t", "overlayToggle"],
  ["shift + drag", "pan"], ["2 fingers", "pinch"], ["Tab", "nextViewport"], ["?", "help"],
];
