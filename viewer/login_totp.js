// The second step of a login (the gateway's two-factor login): the authenticator app's code, or, at the first login
// that needs one, enrolment: the key as a QR code and as text, confirmed by its first code; then the recovery
// codes, shown this once. The password stays in the login form's closure (`submit`), never stored.
import { element } from "./dom.js";
import { language } from "./i18n.js";

const STRINGS = {
  vi: {
    enrolTitle: "Bảo mật hai lớp", enrolHelp: "Quét mã QR bằng ứng dụng xác thực (Google Authenticator, FreeOTP, Aegis…), hoặc nhập khoá bên dưới, rồi nhập mã 6 số của ứng dụng.",
    key: "Khoá", uri: "Địa chỉ otpauth", code: "Mã xác thực hoặc mã khôi phục", confirm: "Xác nhận", verify: "Đăng nhập",
    codeHelp: "Nhập mã 6 số trong ứng dụng xác thực, hoặc một mã khôi phục.", qr: "Mã QR của khoá xác thực",
    recoveryTitle: "Mã khôi phục", recoveryHelp: "Mỗi mã dùng được một lần khi không có điện thoại. Hãy in hoặc chép ra giấy: các mã chỉ hiện lần này.",
    continue: "Tiếp tục", failed: "Mã không đúng",
  },
  en: {
    enrolTitle: "Two-factor login", enrolHelp: "Scan the QR code with an authenticator app (Google Authenticator, FreeOTP, Aegis…), or type in the key below, then enter the app's 6-digit code.",
    key: "Key", uri: "otpauth address", code: "Code or recovery code", confirm: "Confirm", verify: "Log in",
    codeHelp: "Enter the 6-digit code of your authenticator app, or a recovery code.", qr: "QR code of the authenticator key",
    recoveryTitle: "Recovery codes", recoveryHelp: "Each code logs in once without your phone. Print them or write them down: they are shown only now.",
    continue: "Continue", failed: "Wrong code",
  },
};
const t = (key) => STRINGS[language()]?.[key] ?? STRINGS.en[key];

// `answer`: the gateway's 401 with `second_factor`; `submit(factor)`: the login again with {code} or {recovery_code},
// resolving to true (logged in), the login's answer (logged in with more to show, or refused with a second factor),
// or false; `done()`: on to the application.
export function secondFactor(app, answer, submit, done) {
  const input = element("input", { name: "code", autocomplete: "one-time-code", inputmode: "text", required: true });
  const message = element("p", { class: "error", role: "alert" });
  const enrolment = answer.enrolment;
  const form = element("form", { id: "totp", onsubmit: async (event) => {
    event.preventDefault();
    const typed = input.value.trim();
    const result = await submit(/^\d{6}$/.test(typed.replace(/\s/g, "")) ? { code: typed.replace(/\s/g, "") } : { recovery_code: typed });
    if (result === true) done();
    else if (result && result.token) afterLogin(app, result, done);
    else {
      message.textContent = (result && result.error) || t("failed");
      input.value = "";
      input.focus();
    }
  } }, element("label", {}, t("code"), input), element("button", { type: "submit" }, enrolment ? t("confirm") : t("verify")), message);
  const parts = [];
  if (enrolment) {
    const qr = element("img", { id: "totp-qr", alt: t("qr"), src: URL.createObjectURL(new Blob([enrolment.qr_svg], { type: "image/svg+xml" })) });
    parts.push(element("h2", {}, t("enrolTitle")), element("p", {}, t("enrolHelp")), qr,
      element("p", {}, `${t("key")}: `, element("code", { id: "totp-secret" }, enrolment.secret)),
      element("p", { class: "muted" }, `${t("uri")}: `, element("code", { id: "totp-uri" }, enrolment.otpauth_uri)));
  } else {
    parts.push(element("p", {}, t("codeHelp")));
  }
  app.replaceChildren(element("section", { id: "second-factor" }, ...parts, form));
  input.focus();
}

function afterLogin(app, answer, done) {
  if (!answer.recovery_codes) {
    done();
    return;
  }
  const list = element("ol", { id: "recovery-codes" }, answer.recovery_codes.map((code) => element("li", {}, element("code", {}, code))));
  app.replaceChildren(element("section", { id: "recovery" }, element("h2", {}, t("recoveryTitle")),
    element("p", {}, t("recoveryHelp")), list, element("button", { id: "recovery-done", type: "button", onclick: done }, t("continue"))));
}
