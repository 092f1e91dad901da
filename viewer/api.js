// The gateway's public API: login, QIDO-RS, WADO-RS metadata, rendered images and raw frames.
const TOKEN = "pacsgw.token";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  set token(value) { value ? sessionStorage.setItem(TOKEN, value) : sessionStorage.removeItem(TOKEN); },
};

export class Unauthorized extends Error {}

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${session.token}` };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(`${response.status} ${path}`);
  return response;
}

export async function login(username, password) {
  const response = await fetch("/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password }),
  });
  if (!response.ok) return false;
  session.token = (await response.json()).token;
  return true;
}

export async function searchStudies(filters, offset, limit) {
  const query = new URLSearchParams({ ...filters, offset, limit, includefield: "all" });
  const response = await call(`/dicom-web/studies?${query}`, { headers: { Accept: "application/dicom+json" } });
  return { studies: await response.json(), total: Number(response.headers.get("X-Total-Count") || 0) };
}

export async function seriesMetadata(study, series) {
  const response = await call(`/dicom-web/studies/${study}/series/${series}/metadata`);
  return response.json();
}

export async function searchSeries(study) {
  const response = await call(`/dicom-web/studies/${study}/series`, { headers: { Accept: "application/dicom+json" } });
  return response.json();
}

export async function imageURL(path) {
  const response = await call(path, { headers: { Accept: "image/jpeg" } });
  return URL.createObjectURL(await response.blob());
}

// One raw frame (multipart/related, a single application/octet-stream part).
export async function rawFrame(study, series, instance) {
  const response = await call(`/dicom-web/studies/${study}/series/${series}/instances/${instance}/frames/1`, {
    headers: { Accept: 'multipart/related; type="application/octet-stream"' },
  });
  const boundary = /boundary=([^;]+)/.exec(response.headers.get("Content-Type"))[1].replace(/"/g, "");
  return firstPart(new Uint8Array(await response.arrayBuffer()), boundary);
}

function firstPart(body, boundary) {
  const start = indexOf(body, new TextEncoder().encode("\r\n\r\n"), 0) + 4;
  const end = indexOf(body, new TextEncoder().encode(`\r\n--${boundary}`), start);
  return body.slice(start, end).buffer;
}

function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// A DICOM JSON attribute's first value (names as their alphabetic group).
export function value(dataset, tag) {
  const first = dataset?.[tag]?.Value?.[0];
  return first && typeof first === "object" && "Alphabetic" in first ? first.Alphabetic : first;
}
