// The viewer: log in, find a study in the worklist, read it. Every DICOM string is shown with textContent.
import { Unauthorized, imageURL, login, searchSeries, searchStudies, seriesMetadata, session, value } from "./api.js";
import { PRESETS, Stack } from "./stack.js";
import { t, toggleLanguage } from "./i18n.js";
import { SHORTCUTS, View } from "./view.js";
import { describe, drawLengths, toImage } from "./measure.js";

const app = document.getElementById("app");
const PAGE = 25;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, val] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), val);
    else node.setAttribute(key, val);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function chrome() {
  document.getElementById("title").textContent = t("title");
  document.getElementById("language").textContent = t("language");
  const logout = document.getElementById("logout");
  logout.textContent = t("logout");
  logout.hidden = !session.token;
}

async function guarded(work) {
  try {
    await work();
  } catch (error) {
    if (error instanceof Unauthorized) { session.token = null; showLogin(); } else throw error;
  }
}

function showLogin() {
  chrome();
  const username = element("input", { name: "username", autocomplete: "username" });
  const password = element("input", { name: "password", type: "password", autocomplete: "current-password" });
  const message = element("p", { class: "error", role: "alert" });
  const form = element("form", { id: "login", onsubmit: async (event) => {
    event.preventDefault();
    if (await login(username.value, password.value)) showWorklist(); else message.textContent = t("loginFailed");
  } },
  element("label", {}, t("username"), username), element("label", {}, t("password"), password),
  element("button", { type: "submit" }, t("login")), message);
  app.replaceChildren(form);
}

let filters = {};
let offset = 0;

function showWorklist() {
  chrome();
  const fields = { PatientID: "patientId", PatientName: "patientName", AccessionNumber: "accession", ModalitiesInStudy: "modality" };
  const inputs = Object.fromEntries(Object.keys(fields).map((key) => [key, element("input", { name: key, value: filters[key] || "" })]));
  const from = element("input", { name: "from", type: "date" });
  const to = element("input", { name: "to", type: "date" });
  const results = element("div", { id: "results" });
  const form = element("form", { id: "search", onsubmit: (event) => {
    event.preventDefault();
    filters = {};
    for (const [key, input] of Object.entries(inputs)) if (input.value.trim()) filters[key] = key === "PatientName" ? `${input.value.trim()}*` : input.value.trim();
    if (from.value || to.value) filters.StudyDate = `${from.value.replaceAll("-", "")}-${to.value.replaceAll("-", "")}`;
    offset = 0;
    guarded(() => list(results));
  } },
  ...Object.entries(fields).map(([key, label]) => element("label", {}, t(label), inputs[key])),
  element("label", {}, t("dateFrom"), from), element("label", {}, t("dateTo"), to),
  element("button", { type: "submit" }, t("search")));
  app.replaceChildren(form, results);
  guarded(() => list(results));
}

async function list(results) {
  const { studies, total } = await searchStudies(filters, offset, PAGE);
  if (!studies.length) { results.replaceChildren(element("p", {}, t("noResults"))); return; }
  const head = element("tr", {}, ...["patientName", "patientId", "date", "modality", "description", "accession", "images"].map((k) => element("th", {}, t(k))));
  const rows = studies.map((study) => element("tr", { class: "study", tabindex: "0", onclick: () => guarded(() => showStudy(study)) },
    element("td", {}, value(study, "00100010")), element("td", {}, value(study, "00100020")),
    element("td", {}, value(study, "00080020")), element("td", {}, (study["00080061"]?.Value || []).join(", ")),
    element("td", {}, value(study, "00081030")), element("td", {}, value(study, "00080050")),
    element("td", {}, value(study, "00201208"))));
  const pager = element("p", { class: "pager" },
    element("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE); guarded(() => list(results)); } }, t("previous")),
    ` ${offset + 1}–${offset + studies.length} / ${total} `,
    element("button", { type: "button", onclick: () => { if (offset + PAGE < total) { offset += PAGE; guarded(() => list(results)); } } }, t("next")));
  results.replaceChildren(element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows)), pager);
}

async function showStudy(study) {
  chrome();
  const studyUid = value(study, "0020000D");
  const series = await searchSeries(studyUid);
  const canvas = element("canvas", { id: "viewport" });
  const status = element("p", { id: "status", "aria-live": "polite" });
  const overlay = element("p", { id: "overlay" }, `${value(study, "00100010") ?? ""} · ${value(study, "00100020") ?? ""} · ${value(study, "00080020") ?? ""}`);
  const slider = element("input", { id: "slice", type: "range", min: "0", value: "0" });
  const presets = element("p", { id: "presets" }, t("presets"), ...Object.keys(PRESETS).map((name) =>
    element("button", { type: "button", "data-preset": name, onclick: () => stack?.setWindow(...PRESETS[name]) }, name)),
    element("button", { type: "button", id: "invert", onclick: () => { stack.invert = !stack.invert; stack.draw(); } }, t("invert")));
  const thumbnails = element("aside", { id: "series" });
  const view = new View(canvas);
  const positions = new Map(); // slice shown per series, kept while the study is open
  const help = element("dialog", { id: "help" }, element("h2", {}, t("help")),
    element("table", {}, ...SHORTCUTS.map(([keys, what]) => element("tr", {}, element("td", {}, keys), element("td", {}, t(what))))),
    element("button", { type: "button", onclick: () => help.close() }, "OK"));
  const tools = element("p", { id: "tools" },
    ...[["zoom-in", "+", () => view.zoomBy(1.25)], ["zoom-out", "−", () => view.zoomBy(0.8)], ["fit", t("fit"), () => view.reset()],
      ["actual", "1:1", () => view.actualSize()], ["rotate", t("rotate"), () => view.rotate()],
      ["flip-h", t("flipH"), () => view.flip(true)], ["flip-v", t("flipV"), () => view.flip(false)],
      ["tool-length", t("length"), () => { measuring = !measuring; document.getElementById("tool-length").classList.toggle("active", measuring); }],
      ["help-open", "?", () => help.showModal()]]
      .map(([id, label, action]) => element("button", { type: "button", id, onclick: action }, label)));
  let stack = null;
  let measuring = false;
  const lengths = new Map(); // per slice: {a, b, label}
  const measurements = element("ul", { id: "measurements" });
  const showLengths = () => measurements.replaceChildren(...(lengths.get(stack?.index) || []).map((m) => element("li", {}, m.label)));

  const open = async (item) => {
    const seriesUid = value(item, "0020000E");
    if (stack) positions.set(stack.series, stack.index);
    const metadata = await seriesMetadata(studyUid, seriesUid);
    metadata.sort((a, b) => Number(value(a, "00200013")) - Number(value(b, "00200013")));
    lengths.clear();
    stack = new Stack(canvas, studyUid, seriesUid, metadata, () => {
      showLengths();
      slider.max = String(metadata.length - 1);
      slider.value = String(stack.index);
      status.textContent = `${t("slice")} ${stack.index + 1}/${metadata.length} · W ${Math.round(stack.window[1])} L ${Math.round(stack.window[0])}`
        + (stack.loaded < metadata.length ? ` · ${t("loading")} ${stack.loaded}/${metadata.length}` : "");
    });
    stack.afterDraw = (context) => drawLengths(context, lengths.get(stack.index) || []);
    if (positions.has(seriesUid)) stack.index = positions.get(seriesUid);
    view.reset();
    await stack.start();
  };
  for (const item of series) {
    const picture = element("img", { alt: "" });
    const button = element("button", { type: "button", class: "thumb", onclick: () => guarded(() => open(item)) }, picture,
      element("span", {}, `${value(item, "00200011") ?? ""} ${value(item, "0008103E") ?? ""} (${value(item, "00201209") ?? 0})`));
    thumbnails.append(button);
    imageURL(`/dicom-web/studies/${studyUid}/series/${value(item, "0020000E")}/thumbnail`).then((url) => { picture.src = url; }, () => {});
  }
  slider.addEventListener("input", () => stack?.show(Number(slider.value)));
  canvas.addEventListener("wheel", (event) => { event.preventDefault(); stack?.scroll(Math.sign(event.deltaY)); }, { passive: false });
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, window: [...stack.window], pan: event.shiftKey, from: measuring ? toImage(event, canvas, view) : null };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag || !stack) return;
    if (drag.from) return; // measuring: the length is drawn when the button is released
    if (drag.pan) {
      view.panBy(event.clientX - drag.x, event.clientY - drag.y);
      drag.x = event.clientX;
      drag.y = event.clientY;
    } else {
      stack.setWindow(drag.window[0] + (event.clientY - drag.y) * 2, drag.window[1] + (event.clientX - drag.x) * 4);
    }
  });
  canvas.addEventListener("pointerup", (event) => {
    if (drag?.from && stack) {
      const to = toImage(event, canvas, view);
      const list = lengths.get(stack.index) || [];
      list.push({ a: drag.from, b: to, label: describe(drag.from, to, stack.current) });
      lengths.set(stack.index, list);
      stack.draw();
      showLengths();
    }
    drag = null;
  });
  document.onkeydown = (event) => {
    if (!stack) return;
    if (event.key === "ArrowDown" || event.key === "ArrowRight") stack.scroll(1);
    if (event.key === "ArrowUp" || event.key === "ArrowLeft") stack.scroll(-1);
    const keys = { "+": () => view.zoomBy(1.25), "-": () => view.zoomBy(0.8), 0: () => view.reset(), 1: () => view.actualSize(),
      r: () => view.rotate(), h: () => view.flip(true), v: () => view.flip(false), "?": () => help.showModal(),
      i: () => { stack.invert = !stack.invert; stack.draw(); } };
    if (keys[event.key] && !(event.target instanceof HTMLInputElement)) keys[event.key]();
  };
  app.replaceChildren(element("p", {}, element("button", { type: "button", id: "back", onclick: showWorklist }, t("back"))), overlay,
    element("section", { id: "reader" }, thumbnails, element("div", { id: "stage" }, tools, element("div", { id: "frame" }, canvas), slider, status, presets, measurements)), help);
  if (series.length) await open(series[0]);
}

document.getElementById("language").addEventListener("click", () => { toggleLanguage(); session.token ? showWorklist() : showLogin(); });
document.getElementById("logout").addEventListener("click", () => { session.token = null; showLogin(); });
session.token ? showWorklist() : showLogin();
