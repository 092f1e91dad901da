// The report of a study: findings and impression, templates per modality, draft then final with the reader's
// name and time. Radiologists and admins write; referring physicians and share-link visitors read final reports.
import { finalizeReport, report, reportTemplates, saveReport, value } from "./api.js";
import { element } from "./dom.js";
import { language, t } from "./i18n.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString(language() === "vi" ? "vi-VN" : "en-GB") : "");

export async function reportPanel(container, study, role) {
  const studyUid = value(study, "0020000D");
  const editable = role === "admin" || role === "radiologist";
  const modalities = study["00080061"]?.Value || [];
  const templates = editable ? await reportTemplates() : {};
  let current = await report(studyUid);

  const state = () => {
    if (!current) return t("noReport");
    if (current.status === "final") return `${t("final")} · ${current.finalized_by_name || current.finalized_by} · ${when(current.finalized_at)}`;
    return `${t("draft")} · ${current.author_name || current.author} · ${when(current.updated_at)}`;
  };

  const render = () => {
    const status = element("p", { id: "report-status", class: current?.status || "none" }, state());
    if (!editable || current?.status === "final") {
      const body = current && (current.status === "final" || editable)
        ? [element("h3", {}, t("findings")), element("p", { id: "report-findings", class: "text" }, current.findings),
          element("h3", {}, t("impression")), element("p", { id: "report-impression", class: "text" }, current.impression)]
        : [];
      container.replaceChildren(element("h2", {}, t("report")), status, ...body);
      return;
    }
    const findings = element("textarea", { id: "findings", rows: "10", "aria-label": t("findings") });
    const impression = element("textarea", { id: "impression", rows: "4", "aria-label": t("impression") });
    findings.value = current?.findings || "";
    impression.value = current?.impression || "";
    const choices = [...modalities.flatMap((m) => templates[m] || []), ...(templates["*"] || [])];
    const picker = element("select", { id: "template", onchange: () => {
      const chosen = choices[Number(picker.value)];
      if (chosen) { findings.value = chosen.findings; impression.value = chosen.impression; }
    } }, element("option", { value: "" }, t("template")),
    ...choices.map((c, i) => element("option", { value: String(i) }, c.name?.[language()] || c.name?.vi || String(c.name))));
    const message = element("p", { class: "error", role: "alert" });
    const save = async () => {
      message.textContent = "";
      const chosen = choices[Number(picker.value)];
      current = await saveReport(studyUid, { findings: findings.value, impression: impression.value,
        template: chosen ? chosen.name?.vi || "" : current?.template || "" });
      status.textContent = state();
    };
    const attempt = (work) => work().catch((error) => { message.textContent = error.message; });
    const confirm = element("button", { type: "button", id: "report-confirm", hidden: true, onclick: () => attempt(async () => {
      await save();
      current = await finalizeReport(studyUid);
      render();
    }) }, t("confirmFinal"));
    const finalize = element("button", { type: "button", id: "report-final", onclick: () => { confirm.hidden = false; confirm.focus(); } }, t("finalize"));
    const form = element("form", { id: "report-form", onsubmit: (event) => { event.preventDefault(); attempt(save); },
      onkeydown: (event) => { if (event.key === "s" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); attempt(save); } } },
    picker, element("label", {}, t("findings"), findings), element("label", {}, t("impression"), impression),
    element("p", {}, element("button", { type: "submit", id: "report-save" }, t("saveDraft")), " ", finalize, " ", confirm), message);
    container.replaceChildren(element("h2", {}, t("report")), status, form);
  };
  render();
}
