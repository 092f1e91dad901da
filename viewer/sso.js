// Single sign-on through the hospital's identity provider, when the gateway has one ([oidc]): the sign-in button,
// and taking the session the gateway made at the end of the provider's round trip (never through the URL).
import { session } from "./api.js";
import { element } from "./dom.js";
import { t } from "./i18n.js";

// The session of a sign-in just finished, if there is one: kept like a local login's. Whether one was taken.
export async function takeSsoSession() {
  const response = await fetch("/auth/oidc/session", { method: "POST" });
  if (!response.ok) return false;
  const answer = await response.json();
  session.token = answer.token;
  session.role = answer.role;
  session.name = answer.display_name || answer.role;
  return true;
}

// The button that sends the browser to the provider, or null when the gateway has no single sign-on.
export async function ssoButton() {
  let answer;
  try { answer = await (await fetch("/auth/oidc")).json(); } catch { return null; }
  if (!answer.enabled) return null;
  return element("a", { id: "sso", class: "button", href: answer.login }, t("ssoLogin"));
}

// The notice for the viewer's #sso-... fragment the gateway sends back after a failed sign-in ("" for none).
export function ssoNotice() {
  const why = /^#sso-(failed|refused|unavailable)$/.exec(location.hash);
  if (!why) return "";
  history.replaceState(null, "", location.pathname);
  return t({ failed: "ssoFailed", refused: "ssoRefused", unavailable: "ssoUnavailable" }[why[1]]);
}
