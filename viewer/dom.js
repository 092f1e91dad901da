// Building DOM nodes. Text always goes in as text nodes: a DICOM string can never become markup.
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, val] of Object.entries(attributes)) {
    if (val === undefined || val === null || val === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), val);
    else node.setAttribute(key, val === true ? "" : val);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A DICOM date (YYYYMMDD) as the reader expects it: DD/MM/YYYY.
export function date(text) {
  return /^\d{8}$/.test(text || "") ? `${text.slice(6, 8)}/${text.slice(4, 6)}/${text.slice(0, 4)}` : text || "";
}

// A person name's alphabetic group with its ^ separators as spaces.
export function personName(text) {
  return (text || "").split("^").filter(Boolean).join(" ");
}
