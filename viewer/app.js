// The viewer: log in, find a study in the worklist, read and report it; or open one shared study read-only.
// Every DICOM string is shown as text (dom.js), never as markup.
import { RequestFailed, Unauthorized, auditTrail, login, logout, me, searchStudies, session, value } from "./api.js";
import { date, element, personName } from "./dom.js";
import { t, toggleLanguage } from "./i18n.js";
import { secondFactor } from "./login_totp.js";
import { openReader } from "./reader.js";
import { ssoButton, ssoNotice, takeSsoSession } from "./sso.js";

const app = document.getElementById("app");
const PAGE = 25;
const STATUS = { UNREAD: "unread", "IN PROGRESS": "inProgress", READ: "read" };
const COLUMNS = [
  ["StudyStatusID", "status"], ["PatientName", "patientName"], ["PatientID", "patientIdShort"], ["PatientBirthDate", "birthDate"],
  ["StudyDate", "date"], ["ModalitiesInStudy", null, "modality"], ["StudyDescription", "description"],
  ["AccessionNumber", "accession"], ["NumberOfStudyRelatedInstances", "images"],
];

function chrome() {
  document.getElementById("title").textContent = t("title");
  document.getElementById("language").textContent = t("language");
  const logout = document.getElementById("logout");
  logout.textContent = session.role === "share" ? t("close") : t("logout");
  logout.hidden = !session.token;
  document.getElementById("who").textContent = session.token && session.role !== "share" ? `${session.name} · ${t(session.role)}` : "";
}

export async function guarded(work) {
  try {
    await work();
  } catch (error) {
    if (error instanceof Unauthorized) {
      const wasShare = session.role === "share";
      session.clear();
      wasShare ? showShareEnded(error.message) : showLogin(t("sessionEnded"));
    } else {
      app.append(element("p", { class: "error", role: "alert" }, error instanceof RequestFailed ? error.message : t("failed")));
      throw error;
    }
  }
}

function showLogin(notice = "") {
  chrome();
  const username = element("input", { name: "username", autocomplete: "username", required: true });
  const password = element("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = element("p", { class: "error", role: "alert" }, notice);
  const form = element("form", { id: "login", onsubmit: async (event) => {
    event.preventDefault();
    const result = await login(username.value, password.value);
    if (result === true) home();
    else if (result) secondFactor(app, result, (factor) => login(username.value, password.value, factor), home);
    else message.textContent = t("loginFailed");
  } },
  element("label", {}, t("username"), username), element("label", {}, t("password"), password),
  element("button", { type: "submit" }, t("login")), message);
  app.replaceChildren(form);
  username.focus();
  ssoButton().then((button) => button && form.isConnected && form.before(button));  // single sign-on first, when there is one
}

function showShareEnded(message) {
  chrome();
  app.replaceChildren(element("p", { id: "share-ended", class: "error", role: "alert" }, t("shareEnded")),
    element("p", { class: "muted" }, message || ""));
}

let filters = {};
let offset = 0;
let orderby = "";

function home() {
  if (session.role === "auditor") showAudit();
  else showWorklist();
}

function showWorklist() {
  chrome();
  const fields = { PatientID: "patientId", PatientName: "patientName", AccessionNumber: "accession", ModalitiesInStudy: "modality" };
  const inputs = Object.fromEntries(Object.keys(fields).map((key) => [key, element("input", { name: key, value: filters[key]?.replace(/\*$/, "") || "" })]));
  const [since, until] = (filters.StudyDate || "-").split("-");
  const iso = (d) => (d ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : "");
  const from = element("input", { name: "from", type: "date", value: iso(since) });
  const to = element("input", { name: "to", type: "date", value: iso(until) });
  const status = element("select", { name: "StudyStatusID" }, element("option", { value: "" }, t("all")),
    ...Object.entries(STATUS).map(([code, key]) => element("option", { value: code, selected: filters.StudyStatusID === code }, t(key))));
  const results = element("div", { id: "results" });
  const form = element("form", { id: "search", onsubmit: (event) => {
    event.preventDefault();
    filters = {};
    for (const [key, input] of Object.entries(inputs)) {
      const text = input.value.trim();
      if (text) filters[key] = key === "PatientName" ? `${text}*` : key === "ModalitiesInStudy" ? text.toUpperCase() : text;
    }
    if (from.value || to.value) filters.StudyDate = `${from.value.replaceAll("-", "")}-${to.value.replaceAll("-", "")}`;
    if (status.value) filters.StudyStatusID = status.value;
    offset = 0;
    guarded(() => list(results));
  } },
  ...Object.entries(fields).map(([key, label]) => element("label", {}, t(label), inputs[key])),
  element("label", {}, t("dateFrom"), from), element("label", {}, t("dateTo"), to), element("label", {}, t("status"), status),
  element("button", { type: "submit" }, t("search")));
  app.replaceChildren(form, results);
  guarded(() => list(results));
}

async function list(results) {
  const { studies, total } = await searchStudies(filters, offset, PAGE, orderby);
  if (!studies.length) { results.replaceChildren(element("p", {}, t("noResults"))); return; }
  const sortBy = (keyword) => {
    orderby = orderby === keyword ? `-${keyword}` : keyword;
    offset = 0;
    guarded(() => list(results));
  };
  const head = element("tr", {}, ...COLUMNS.map(([keyword, label, fallback]) => {
    const arrow = orderby === keyword ? " ▲" : orderby === `-${keyword}` ? " ▼" : "";
    const sort = orderby.replace(/^-/, "") === keyword ? (orderby.startsWith("-") ? "descending" : "ascending") : "none";
    return element("th", { "aria-sort": sort }, element("button", { type: "button", class: "sort", "data-sort": keyword, onclick: () => sortBy(keyword) },
      t(label || fallback), arrow));
  }));
  const rows = studies.map((study) => {
    const code = value(study, "0032000A") || "UNREAD";
    return element("tr", { class: "study", tabindex: "0", "data-status": code,
      onclick: () => { performance.mark("pacsgw:open-study"); guarded(() => openReader(app, study, { role: session.role, back: showWorklist })); },
      onkeydown: (event) => { if (event.key === "Enter") event.currentTarget.click(); } },
    element("td", {}, element("span", { class: `badge ${STATUS[code] || ""}` }, t(STATUS[code] || code))),
    element("td", {}, personName(value(study, "00100010"))), element("td", {}, value(study, "00100020")),
    element("td", {}, date(value(study, "00100030"))), element("td", {}, date(value(study, "00080020"))),
    element("td", {}, (study["00080061"]?.Value || []).join(", ")), element("td", {}, value(study, "00081030")),
    element("td", {}, value(study, "00080050")), element("td", {}, value(study, "00201208")));
  });
  const pager = element("p", { class: "pager" },
    element("button", { type: "button", id: "previous", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); guarded(() => list(results)); } }, t("previous")),
    ` ${offset + 1}–${offset + studies.length} / ${total} `,
    element("button", { type: "button", id: "next", disabled: offset + PAGE >= total, onclick: () => { offset += PAGE; guarded(() => list(results)); } }, t("next")));
  results.replaceChildren(element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows)), pager);
}

async function showAudit() {
  chrome();
  const rows = await auditTrail();
  app.replaceChildren(element("h2", {}, t("auditTrail")), element("table", { id: "audit" },
    element("thead", {}, element("tr", {}, ...["time", "user", "action", "target", "outcome"].map((k) => element("th", {}, t(k))))),
    element("tbody", {}, ...rows.map((r) => element("tr", {}, element("td", {}, r.at), element("td", {}, r.username),
      element("td", {}, r.action), element("td", {}, r.target), element("td", {}, r.outcome))))));
}

// A share link: /viewer/#share=<token>. The token is taken out of the address bar at once and kept for this tab only.
async function openShare(token) {
  session.clear();
  session.token = token;
  session.role = "share";
  history.replaceState(null, "", location.pathname);
  await startShare();
}

async function startShare() {
  chrome();
  const principal = await me();
  session.study = principal.study_uid;
  const { studies } = await searchStudies({ StudyInstanceUID: principal.study_uid }, 0, 1, "");
  if (!studies.length) { showShareEnded(""); return; }
  await openReader(app, studies[0], { role: "share" });
}

function start() {
  const share = /^#share=([\w.-]+)$/.exec(location.hash);
  if (share) guarded(() => openShare(share[1]));
  else if (session.role === "share" && session.token) guarded(startShare);
  else if (session.token) guarded(async () => home());
  else {
    const notice = ssoNotice();
    takeSsoSession().then((taken) => (taken ? guarded(async () => home()) : showLogin(notice)));
  }
}

document.getElementById("language").addEventListener("click", () => {
  toggleLanguage();
  if (session.role === "share") guarded(startShare); else session.token ? home() : showLogin();
});
document.getElementById("logout").addEventListener("click", async () => {
  const wasShare = session.role === "share";
  await logout();
  wasShare ? showShareEnded("") : showLogin();
});
window.addEventListener("hashchange", start);
start();
