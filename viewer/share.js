// Sharing one study: a time-limited, revocable link and its QR code. The link holds an opaque token only, in the
// URL fragment, which browsers never send to a server.
import { createShare, listShares, revokeShare, value } from "./api.js";
import { element } from "./dom.js";
import { language, t } from "./i18n.js";

const DURATIONS = [[24, "day1"], [72, "day3"], [168, "day7"], [720, "day30"]];
const when = (iso) => new Date(iso).toLocaleString(language() === "vi" ? "vi-VN" : "en-GB");

export function shareDialog(app, study) {
  const studyUid = value(study, "0020000D");
  const hours = element("select", { id: "share-hours" }, ...DURATIONS.map(([h, key]) => element("option", { value: String(h), selected: h === 72 }, t(key))));
  const label = element("input", { id: "share-label", maxlength: "128", placeholder: t("shareLabelHint") });
  const result = element("div", { id: "share-result" });
  const links = element("ul", { id: "share-links" });
  const message = element("p", { class: "error", role: "alert" });
  const refresh = async () => {
    const all = await listShares(studyUid);
    links.replaceChildren(...all.map((link) => element("li", { class: link.active ? "active-link" : "inactive-link" },
      `${link.label || "—"} · ${t("expires")} ${when(link.expires_at)} · ${link.created_by} `,
      link.active ? element("button", { type: "button", class: "revoke", onclick: () => revokeShare(link.id).then(refresh, (e) => { message.textContent = e.message; }) }, t("revoke"))
        : element("em", {}, link.revoked ? t("revoked") : t("expired")))));
  };
  const create = async () => {
    message.textContent = "";
    const made = await createShare(studyUid, Number(hours.value), label.value.trim());
    const url = element("input", { id: "share-url", readonly: true, value: made.url, onfocus: (event) => event.target.select() });
    const qr = element("img", { id: "share-qr", alt: t("qr"), src: URL.createObjectURL(new Blob([made.qr_svg], { type: "image/svg+xml" })) });
    const copy = element("button", { type: "button", onclick: () => navigator.clipboard?.writeText(made.url).catch(() => url.select()) }, t("copy"));
    result.replaceChildren(element("p", {}, url, " ", copy), qr, element("p", { class: "muted" }, `${t("expires")} ${when(made.expires_at)}`));
    await refresh();
  };
  const dialog = element("dialog", { id: "share" }, element("h2", {}, t("share")),
    element("form", { method: "dialog", onsubmit: (event) => { event.preventDefault(); create().catch((e) => { message.textContent = e.message; }); } },
      element("label", {}, t("validFor"), hours), element("label", {}, t("shareLabel"), label),
      element("button", { type: "submit", id: "share-create" }, t("createLink"))),
    message, result, element("h3", {}, t("links")), links,
    element("button", { type: "button", id: "share-close", onclick: () => { dialog.close(); dialog.remove(); } }, t("close")));
  app.append(dialog);
  dialog.showModal();
  refresh().catch((e) => { message.textContent = e.message; });
}
