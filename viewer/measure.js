// Measurements on a frame, in image pixel coordinates: length (millimetres from Pixel Spacing, flagged when only
// the detector's Imager Pixel Spacing, or nothing, calibrates the image), angle, and elliptical ROI statistics.

export function calibration(meta) {
  const spacing = meta?.["00280030"]?.Value;
  if (spacing?.length === 2) return { row: Number(spacing[0]), column: Number(spacing[1]), note: "" };
  const imager = meta?.["00181164"]?.Value;
  if (imager?.length === 2) return { row: Number(imager[0]), column: Number(imager[1]), note: " (detector)" };
  return null;
}

export function describe(a, b, meta) {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const scale = calibration(meta);
  if (!scale) return `${Math.hypot(dx, dy).toFixed(1)} px (uncalibrated)`;
  return `${Math.hypot(dx * scale.column, dy * scale.row).toFixed(1)} mm${scale.note}`;
}

// The angle at b between b→a and b→c, in physical space when the pixels are not square.
export function angle(a, b, c, meta) {
  const scale = calibration(meta) || { row: 1, column: 1 };
  const u = [(a.x - b.x) * scale.column, (a.y - b.y) * scale.row];
  const v = [(c.x - b.x) * scale.column, (c.y - b.y) * scale.row];
  const cos = (u[0] * v[0] + u[1] * v[1]) / (Math.hypot(...u) * Math.hypot(...v) || 1);
  return `${((Math.acos(Math.max(-1, Math.min(1, cos))) * 180) / Math.PI).toFixed(1)}°`;
}

// Mean and standard deviation of the modality values (HU on CT) inside the ellipse inscribed in the box a-b.
export function roiStatistics(a, b, values, meta) {
  if (!values) return null;
  const { raw, slope, intercept, columns } = values;
  const rows = raw.length / columns;
  const cx = (a.x + b.x) / 2;
  const cy = (a.y + b.y) / 2;
  const rx = Math.abs(b.x - a.x) / 2;
  const ry = Math.abs(b.y - a.y) / 2;
  if (rx < 0.5 || ry < 0.5) return null;
  let count = 0;
  let sum = 0;
  let squares = 0;
  for (let y = Math.max(0, Math.floor(cy - ry)); y <= Math.min(rows - 1, Math.ceil(cy + ry)); y++) {
    for (let x = Math.max(0, Math.floor(cx - rx)); x <= Math.min(columns - 1, Math.ceil(cx + rx)); x++) {
      // pixel centres at x + 0.5
      if (((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 > 1) continue;
      const v = raw[y * columns + x] * slope + intercept;
      count += 1;
      sum += v;
      squares += v * v;
    }
  }
  if (!count) return null;
  const mean = sum / count;
  const sd = Math.sqrt(Math.max(0, squares / count - mean * mean));
  const scale = calibration(meta);
  const unit = meta?.["00080060"]?.Value?.[0] === "CT" ? " HU" : "";
  const area = scale ? `${(Math.PI * rx * ry * scale.row * scale.column).toFixed(1)} mm²` : `${count} px`;
  return { mean, sd, count, label: `${mean.toFixed(1)} ± ${sd.toFixed(1)}${unit} · ${area}` };
}

// A point on screen, in image pixel coordinates, undoing the view's fit, pan, zoom, rotation and flips.
export function toImage(event, canvas, view) {
  const frame = canvas.parentElement.getBoundingClientRect();
  const fit = Math.min(frame.width / canvas.width, frame.height / canvas.height) * view.zoom;
  const [x, y] = view.toImageDirection(event.clientX - (frame.left + frame.width / 2) - view.panX,
    event.clientY - (frame.top + frame.height / 2) - view.panY);
  return { x: x / fit + canvas.width / 2, y: y / fit + canvas.height / 2 };
}

export function drawMeasurements(context, measurements) {
  context.save();
  context.strokeStyle = "#ffd54a";
  context.fillStyle = "#ffd54a";
  context.lineWidth = Math.max(1, context.canvas.width / 400);
  context.font = `${Math.max(10, context.canvas.width / 40)}px sans-serif`;
  for (const m of measurements) {
    context.beginPath();
    if (m.kind === "roi") {
      const [cx, cy] = [(m.a.x + m.b.x) / 2, (m.a.y + m.b.y) / 2];
      context.ellipse(cx, cy, Math.abs(m.b.x - m.a.x) / 2, Math.abs(m.b.y - m.a.y) / 2, 0, 0, 2 * Math.PI);
      context.stroke();
      context.fillText(m.label, Math.max(m.a.x, m.b.x) + 4, cy);
      continue;
    }
    context.moveTo(m.a.x, m.a.y);
    context.lineTo(m.b.x, m.b.y);
    if (m.c) context.lineTo(m.c.x, m.c.y);
    context.stroke();
    const at = m.c ? m.b : { x: (m.a.x + m.b.x) / 2, y: (m.a.y + m.b.y) / 2 };
    context.fillText(m.label, at.x + 4, at.y - 4);
  }
  context.restore();
}
