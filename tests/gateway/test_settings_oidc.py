"""The ``[oidc]`` settings of single sign-on: defaults, the environment, the role map, and what is refused."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError, load_settings, redacted

ISSUER = "https://sso.example-hospital.vn/realms/hospital"


def test_off_by_default_with_keycloak_style_claims() -> None:
    oidc = load_settings(environ={}).oidc
    assert oidc.issuer == "" and oidc.role_table() == {}
    assert oidc.roles_claim == "realm_access.roles" and oidc.username_claim == "preferred_username"
    assert oidc.leeway_seconds == 30.0 and oidc.scopes == ["openid", "profile"]


def test_environment_role_map_and_the_secret_masked() -> None:
    s = load_settings(environ={
        "PACSGW_OIDC_ISSUER": ISSUER, "PACSGW_OIDC_CLIENT_ID": "pacs-gateway", "PACSGW_OIDC_CLIENT_SECRET": "s3cret",
        "PACSGW_OIDC_ROLE_MAP": "pacs-reader=radiologist, realm:admins=admin", "PACSGW_OIDC_LEEWAY_SECONDS": "5",
    })  # fmt: skip
    assert s.oidc.role_table() == {"pacs-reader": "radiologist", "realm:admins": "admin"}
    assert s.oidc.leeway_seconds == 5.0
    assert redacted(s)["oidc"]["client_secret"] == "***" and "s3cret" not in repr(redacted(s))


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PACSGW_OIDC_ROLE_MAP": "pacs-reader=superuser"}, "oidc.role_map"),
        ({"PACSGW_OIDC_ROLE_MAP": "pacs-reader=share"}, "oidc.role_map"),  # a share link is never an account's role
        ({"PACSGW_OIDC_ROLE_MAP": "radiologist"}, "oidc.role_map"),
        ({"PACSGW_OIDC_CLIENT_ID": ""}, "oidc.audience or oidc.client_id"),
        ({"PACSGW_OIDC_ISSUER": "sso.example-hospital.vn"}, "oidc.issuer"),
        ({"PACSGW_OIDC_LEEWAY_SECONDS": "-1"}, "must not be negative"),
    ],
)
def test_what_cannot_work_is_refused_at_start(env: dict[str, str], words: str) -> None:
    base = {"PACSGW_OIDC_ISSUER": ISSUER, "PACSGW_OIDC_CLIENT_ID": "pacs-gateway"}
    with pytest.raises(SettingsError, match=words):
        load_settings(environ={**base, **env})
