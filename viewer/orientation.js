// Orientation markers from Image Orientation (Patient): which patient direction each screen edge faces,
// following the view's rotation and flips. Patient axes are LPS: +x left, +y posterior, +z head.
const LETTERS = [["R", "L"], ["A", "P"], ["F", "H"]];

function letters(vector) {
  return vector
    .map((component, axis) => [Math.abs(component), LETTERS[axis][component > 0 ? 1 : 0]])
    .filter(([size]) => size > 0.25)
    .sort((a, b) => b[0] - a[0])
    .map(([, letter]) => letter)
    .join("");
}

// {top, bottom, left, right} letters, or null when the image carries no orientation.
export function markers(meta, view) {
  const cosines = meta?.["00200037"]?.Value?.map(Number);
  if (cosines?.length !== 6 || cosines.some((c) => !Number.isFinite(c))) return null;
  const row = cosines.slice(0, 3); // the direction of increasing column index
  const column = cosines.slice(3); // the direction of increasing row index
  const towards = (sx, sy) => {
    const [dx, dy] = view.toImageDirection(sx, sy);
    return letters([0, 1, 2].map((axis) => dx * row[axis] + dy * column[axis]));
  };
  return { right: towards(1, 0), left: towards(-1, 0), bottom: towards(0, 1), top: towards(0, -1) };
}
