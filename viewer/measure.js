// Lengths measured on a slice, in millimetres from Pixel Spacing (flagged when only the detector's
// Imager Pixel Spacing, or nothing, calibrates the image).

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

// A point on screen, in image pixel coordinates, undoing the view's fit, pan, zoom, rotation and flips.
export function toImage(event, canvas, view) {
  const frame = canvas.parentElement.getBoundingClientRect();
  const fit = Math.min(frame.width / canvas.width, frame.height / canvas.height) * view.zoom;
  let x = event.clientX - (frame.left + frame.width / 2) - view.panX;
  let y = event.clientY - (frame.top + frame.height / 2) - view.panY;
  const angle = (-view.rotation * Math.PI) / 180;
  [x, y] = [x * Math.cos(angle) - y * Math.sin(angle), x * Math.sin(angle) + y * Math.cos(angle)];
  if (view.flipH) x = -x;
  if (view.flipV) y = -y;
  return { x: x / fit + canvas.width / 2, y: y / fit + canvas.height / 2 };
}

export function drawLengths(context, lengths) {
  context.save();
  context.strokeStyle = "#ffd54a";
  context.fillStyle = "#ffd54a";
  context.lineWidth = Math.max(1, context.canvas.width / 400);
  context.font = `${Math.max(10, context.canvas.width / 40)}px sans-serif`;
  for (const { a, b, label } of lengths) {
    context.beginPath();
    context.moveTo(a.x, a.y);
    context.lineTo(b.x, b.y);
    context.stroke();
    context.fillText(label, (a.x + b.x) / 2 + 4, (a.y + b.y) / 2 - 4);
  }
  context.restore();
}

