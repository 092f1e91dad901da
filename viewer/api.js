// The gateway's public API: login, QIDO-RS, WADO-RS metadata, rendered images and raw frames.
const KEYS = { token: "pacsgw.token", role: "pacsgw.role", name: "pacsgw.name", study: "pacsgw.study" };

// The session lives in sessionStorage: it ends with the tab, and a share link's token never reaches history.
export const session = {};
for (const [field, key] of Object.entries(KEYS)) {
  Object.defineProperty(session, field, {
    get: () => sessionStorage.getItem(key),
    set: (v) => (v ? sessionStorage.setItem(key, v) : sessionStorage.removeItem(key)),
  });
}
session.clear = () => Object.values(KEYS).forEach((key) => sessionStorage.removeItem(key));

export class Unauthorized extends Error {}

export class RequestFailed extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${session.token}` };
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  let message = `${response.status}`;
  try { message = (await response.json()).error || message; } catch { /* not JSON */ }
  if (response.status === 401) throw new Unauthorized(message);
  throw new RequestFailed(response.status, message);
}

async function json(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await call(path, options);
  return response.status === 204 ? null : response.json();
}

// True when logged in; false for a wrong password; else the answer: a second factor asked for or refused
// (`second_factor`, login_totp.js), a refusal of it (`error`), or a login with recovery codes to show.
export async function login(username, password, factor = {}) {
  const response = await fetch("/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ username, password, ...factor }),
  });
  let answer = {};
  try { answer = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) return answer.second_factor || Object.keys(factor).length ? answer : false;
  session.token = answer.token;
  session.role = answer.role;
  session.name = answer.display_name || username;
  return answer.recovery_codes ? answer : true;
}

export const me = () => json("GET", "/auth/me");
// Revokes the session's token on the gateway, so that it stops working there too (a shared reading room).
export async function logout() {
  if (session.token && session.role !== "share") {
    try { await call("/auth/logout", { method: "POST" }); } catch { /* the token is forgotten here either way */ }
  }
  session.clear();
}
export async function report(study) {
  try { return await json("GET", `/studies/${study}/report`); } catch (error) {
    if (error instanceof RequestFailed && error.status === 404) return null;
    throw error;
  }
}
export const saveReport = (study, draft) => json("PUT", `/studies/${study}/report`, draft);
export const finalizeReport = (study) => json("POST", `/studies/${study}/report/final`);
export const reportTemplates = () => json("GET", "/report-templates");
export const createShare = (study, hours, label) => json("POST", `/studies/${study}/shares`, { hours, label });
export const listShares = (study) => json("GET", `/studies/${study}/shares`);
export const revokeShare = (id) => json("DELETE", `/shares/${id}`);
export const auditTrail = () => json("GET", "/audit?limit=200");

export async function searchStudies(filters, offset, limit, orderby) {
  const query = new URLSearchParams({ ...filters, offset, limit, includefield: "all" });
  if (orderby) query.set("orderby", orderby);
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

export async function imageBitmap(path) {
  const response = await call(path, { headers: { Accept: "image/jpeg" } });
  return createImageBitmap(await response.blob());
}

// One raw frame (multipart/related, a single application/octet-stream part).
export async function rawFrame(path) {
  const response = await call(path, {
    headers: { Accept: 'multipart/related; type="application/octet-stream"' },
  });
  const boundary = /boundary=([^;]+)/.exec(response.headers.get("Content-Type"))[1].replace(/"/g, "");
  return firstPart(new Uint8Array(await response.arrayBuffer()), boundary);
}

// The single part's body: after the part headers, up to the closing delimiter, which is sought from the end
// (a frame is hundreds of kilobytes; its delimiter is in the last few dozen bytes).
function firstPart(body, boundary) {
  const start = indexOf(body, new TextEncoder().encode("\r\n\r\n"), 0) + 4;
  const end = lastIndexOf(body, new TextEncoder().encode(`\r\n--${boundary}`), start);
  return body.slice(start, end).buffer;
}

function matches(haystack, needle, at) {
  for (let j = 0; j < needle.length; j++) if (haystack[at + j] !== needle[j]) return false;
  return true;
}

function indexOf(haystack, needle, from) {
  for (let i = from; i <= haystack.length - needle.length; i++) if (matches(haystack, needle, i)) return i;
  return -1;
}

function lastIndexOf(haystack, needle, floor) {
  for (let i = haystack.length - needle.length; i >= floor; i--) if (matches(haystack, needle, i)) return i;
  return -1;
}

// A DICOM JSON attribute's first value (names as their alphabetic group).
export function value(dataset, tag) {
  const first = dataset?.[tag]?.Value?.[0];
  return first && typeof first === "object" && "Alphabetic" in first ? first.Alphabetic : first;
}
