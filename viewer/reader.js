// The reading screen: series thumbnails and prior studies, a layout of 1, 2 or 4 viewports, the tools, the
// report panel and, for those who may, sharing. A share-link visitor gets the same viewer, read-only and simpler.
import { imageURL, searchSeries, searchStudies, value } from "./api.js";
import { date, element, personName } from "./dom.js";
import { t } from "./i18n.js";
import { reportPanel } from "./report.js";
import { shareDialog } from "./share.js";
import { PRESETS } from "./stack.js";
import { SHORTCUTS } from "./view.js";
import { Viewport } from "./viewport.js";

const LAYOUTS = { "1x1": 1, "1x2": 2, "2x2": 4 };
const TOOLS = [["window", "W/L", "w"], ["scroll", "⇅", "s"], ["pan", "✥", null], ["zoom", "±", null],
  ["length", "↔ mm", "l"], ["angle", "∠", "a"], ["roi", "◯ HU", "o"]];

export async function openReader(app, study, { role, back }) {
  const readOnly = role === "share";
  const studyUid = value(study, "0020000D");
  const series = await searchSeries(studyUid);
  const tools = { current: "window" };
  const measurements = element("ul", { id: "measurements" });
  const thumbs = new Map(); // series UID -> progress element
  const viewports = [];
  let active = null;
  const activate = (viewport) => {
    active = viewport;
    viewports.forEach((v) => v.root.classList.toggle("active", v === viewport && viewports.length > 1));
    listMeasurements();
  };
  const listMeasurements = () => measurements.replaceChildren(...(active?.currentMeasurements || []).map((m) => element("li", {}, m.label)));
  const progress = (stack) => {
    const bar = thumbs.get(stack.series);
    if (bar) { bar.max = stack.length; bar.value = stack.loaded; bar.hidden = stack.complete; }
  };
  const makeViewport = () => new Viewport(viewports.length + 1, tools, { onActivate: activate, onProgress: progress, onMeasure: listMeasurements });
  const grid = element("div", { id: "grid", class: "layout-1x1" });
  const setLayout = (name) => {
    while (viewports.length < LAYOUTS[name]) viewports.push(makeViewport());
    grid.className = `layout-${name}`;
    grid.replaceChildren(...viewports.slice(0, LAYOUTS[name]).map((v) => v.root));
    if (!grid.contains(active?.root)) activate(viewports[0]);
    else activate(active);
    document.querySelectorAll("[data-layout]").forEach((b) => b.classList.toggle("active", b.dataset.layout === name));
  };
  const layoutOf = () => grid.className.replace("layout-", "");
  // A series goes to the active viewport; a prior's series goes beside the current study when one viewport shows.
  const place = (owner, item, prior) => {
    if (prior && layoutOf() === "1x1") { setLayout("1x2"); activate(viewports[1]); }
    return active.load(owner, item, { prior });
  };

  let thumbnailsWait = []; // thumbnails are fetched once the first image is on screen, not before it
  const thumbnail = (owner, item, prior) => {
    const picture = element("img", { alt: "" });
    const bar = element("progress", { max: "1", value: "0", hidden: true });
    thumbs.set(value(item, "0020000E"), bar);
    const fetchThumbnail = () => imageURL(`/dicom-web/studies/${value(owner, "0020000D")}/series/${value(item, "0020000E")}/thumbnail`)
      .then((url) => { picture.src = url; }, () => {});
    if (thumbnailsWait) thumbnailsWait.push(fetchThumbnail); else fetchThumbnail();
    return element("button", { type: "button", class: "thumb", "data-series": value(item, "0020000E"), onclick: () => guard(place(owner, item, prior)) },
      picture, element("span", {}, `${value(item, "00200011") ?? ""} ${value(item, "00080060") ?? ""} ${value(item, "0008103E") ?? ""} (${value(item, "00201209") ?? 0})`), bar);
  };
  const guard = (promise) => promise.catch((error) => { active.status.textContent = `${t("loadFailed")}: ${error.message}`; });

  const thumbnails = element("aside", { id: "series" }, ...series.map((item) => thumbnail(study, item, false)));
  if (!readOnly) priors(study, thumbnails, thumbnail).catch(() => {}); // priors are a help, never a blocker

  const help = element("dialog", { id: "help" }, element("h2", {}, t("help")),
    element("table", {}, ...SHORTCUTS.map(([keys, what]) => element("tr", {}, element("td", {}, keys), element("td", {}, t(what))))),
    element("button", { type: "button", onclick: () => help.close() }, "OK"));
  const selectTool = (name) => {
    tools.current = name;
    active.angleArm = null;
    active.preview = null;
    document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === name));
  };
  const toolButtons = TOOLS.filter(([name]) => !readOnly || !["angle", "roi"].includes(name)).map(([name, label]) =>
    element("button", { type: "button", id: `tool-${name}`, "data-tool": name, title: t(name === "window" ? "window/level" : name), onclick: () => selectTool(name) }, label));
  const actions = [["zoom-in", "+", () => active.view.zoomBy(1.25)], ["zoom-out", "−", () => active.view.zoomBy(0.8)],
    ["fit", t("fit"), () => active.view.reset()], ["actual", "1:1", () => active.view.actualSize()], ["rotate", t("rotate"), () => active.view.rotate()],
    ["flip-h", t("flipH"), () => active.view.flip(true)], ["flip-v", t("flipV"), () => active.view.flip(false)],
    ["invert", t("invert"), () => active.toggleInvert()], ["clear", t("clearMeasurements"), () => active.clearMeasurements()],
    ["cine", t("cine"), () => active.toggleCine()], ["help-open", "?", () => help.showModal()]]
    .map(([id, label, action]) => element("button", { type: "button", id, onclick: action }, label));
  const layouts = readOnly ? [] : Object.keys(LAYOUTS).map((name) => element("button", { type: "button", "data-layout": name, onclick: () => setLayout(name) }, name));
  const presets = element("p", { id: "presets" }, t("presets"), ...Object.keys(PRESETS).map((name) =>
    element("button", { type: "button", "data-preset": name, onclick: () => active.setWindow(...PRESETS[name]) }, t(name))),
  element("button", { type: "button", id: "preset-default", onclick: () => active.stack && active.setWindow(...active.stack.defaultWindow) }, t("default")));

  const heading = element("div", { id: "study-heading" },
    back ? element("button", { type: "button", id: "back", onclick: () => { stopAll(); back(); } }, t("back")) : null,
    element("strong", {}, personName(value(study, "00100010"))), ` ${value(study, "00100020") ?? ""} · ${date(value(study, "00080020"))} · ${value(study, "00081030") ?? ""}`,
    role === "admin" || role === "radiologist" ? element("button", { type: "button", id: "share-open", onclick: () => shareDialog(app, study) }, t("share")) : null);
  const side = element("aside", { id: "report" });
  app.replaceChildren(heading, element("section", { id: "reader" }, thumbnails,
    element("div", { id: "stage" }, element("p", { id: "tools" }, ...toolButtons, " ", ...actions, " ", ...layouts), grid, presets, measurements), side), help);
  setLayout("1x1");
  selectTool("window");
  reportPanel(side, study, role).catch((error) => side.replaceChildren(element("p", { class: "error" }, error.message)));

  const stopAll = () => {
    viewports.forEach((v) => { v.stopCine(); v.stack?.cancel(); });
    document.onkeydown = null;
  };
  document.onkeydown = (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement || event.target instanceof HTMLSelectElement) return;
    if (!active?.stack || help.open) return;
    // On a focused button, Space, Enter and Tab keep their usual meaning (press it, move focus).
    if (event.target instanceof HTMLButtonElement && [" ", "Enter", "Tab"].includes(event.key)) return;
    const v = active;
    const keys = {
      ArrowDown: () => v.scroll(1), ArrowRight: () => v.scroll(1), ArrowUp: () => v.scroll(-1), ArrowLeft: () => v.scroll(-1),
      PageDown: () => v.scroll(10), PageUp: () => v.scroll(-10), Home: () => v.show(0), End: () => v.show(v.stack.length - 1),
      "+": () => v.view.zoomBy(1.25), "-": () => v.view.zoomBy(0.8), 0: () => v.view.reset(), 1: () => v.view.actualSize(),
      r: () => v.view.rotate(), h: () => v.view.flip(true), v: () => v.view.flip(false), i: () => v.toggleInvert(),
      "?": () => help.showModal(), " ": () => v.toggleCine(), Delete: () => v.clearMeasurements(), Escape: () => selectTool(tools.current),
      t: () => viewports.forEach((each) => { each.overlay = !each.overlay; each.decorate(); }),
      Tab: () => { const shown = viewports.filter((each) => grid.contains(each.root)); activate(shown[(shown.indexOf(v) + 1) % shown.length]); },
    };
    for (const [name, , key] of TOOLS) if (key && (!readOnly || !["angle", "roi"].includes(name))) keys[key] = () => selectTool(name);
    if (keys[event.key]) {
      event.preventDefault();
      keys[event.key]();
    }
  };
  const showThumbnails = () => { const waiting = thumbnailsWait; thumbnailsWait = null; waiting.forEach((fetch) => fetch()); };
  if (series.length) await guard(active.load(study, series[0])).finally(showThumbnails);
  else showThumbnails();
}

// Other studies of the same patient, newest first; their series open beside the current study.
async function priors(study, container, thumbnail) {
  const patientId = value(study, "00100020");
  if (!patientId) return;
  const { studies } = await searchStudies({ PatientID: patientId }, 0, 20, "-StudyDate");
  const others = studies.filter((s) => value(s, "0020000D") !== value(study, "0020000D"));
  if (!others.length) return;
  const section = element("div", { id: "priors" }, element("h3", {}, t("priors")));
  for (const prior of others) {
    const holder = element("div", { class: "prior-series" });
    const open = async () => {
      if (holder.childElementCount) { holder.replaceChildren(); return; }
      const items = await searchSeries(value(prior, "0020000D"));
      holder.replaceChildren(...items.map((item) => thumbnail(prior, item, true)));
    };
    section.append(element("button", { type: "button", class: "prior", onclick: () => open().catch(() => {}) },
      `${date(value(prior, "00080020"))} ${(prior["00080061"]?.Value || []).join(",")} ${value(prior, "00081030") ?? ""}`), holder);
  }
  container.append(section);
}
