"""OpenID providers as processes on free ports, for single sign-on tests.

- :func:`run_provider_mock`: PyPI ``oidc-provider-mock`` (a Flask app run by its own command line), the whole
  provider: client registration, users and their claims, the authorization endpoint's form, the token endpoint,
  RS256 ID tokens. Its access tokens are opaque and it neither rotates keys nor signs ES256, hence
- :func:`run_jwt_issuer`: tests/peers/jwt_issuer.py, discovery and a rotating JWKS with RS256 and ES256 keys,
  minting JWT access tokens as a test asks (bad ones included).

    with run_provider_mock(tmp_path) as provider:
        client_id, secret = provider.register_client(["http://127.0.0.1:8042/auth/oidc/callback"])
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ports import free_port
from .process import log_tail, stop_group, wait_http_ready


def _reachable(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        return http_call(url, context=context)[0] == 200
    except (urllib.error.URLError, OSError):
        return False

_START_TIMEOUT = 30.0
_REPO = Path(__file__).resolve().parents[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_call(url: str, body: Any = None, *, method: str | None = None, form: bool = False,
              headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request, redirects not followed: the status, headers and body (a dict body as JSON, or as a form)."""
    data, sent = None, dict(headers or {})
    if body is not None:
        data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context)).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@dataclass
class ProviderMock:
    base_url: str  # also its issuer
    proc: subprocess.Popen[bytes]

    def register_client(self, redirect_uris: list[str]) -> tuple[str, str]:
        status, _, body = http_call(self.base_url + "/oauth2/clients", {"redirect_uris": redirect_uris})
        assert status == 201, body
        answer = json.loads(body)
        return answer["client_id"], answer["client_secret"]

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        status, _, body = http_call(f"{self.base_url}/users/{urllib.parse.quote(sub, safe='')}", claims, method="PUT")
        assert status == 204, body

    def id_token(self, client_id: str, secret: str, redirect_uri: str, sub: str) -> str:
        """An ID token for ``sub``, by the authorization code flow driven over HTTP as a browser and a client would."""
        query = urllib.parse.urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                                        "scope": "openid profile", "nonce": "n-0", "state": "s-0"})  # fmt: skip
        status, headers, body = http_call(f"{self.base_url}/oauth2/authorize?{query}", {"sub": sub}, form=True)
        assert status == 302, body
        code = urllib.parse.parse_qs(urllib.parse.urlparse(headers["Location"]).query)["code"][0]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        status, _, body = http_call(self.base_url + "/oauth2/token", form, form=True, headers={"Authorization": f"Basic {basic}"})
        assert status == 200, body
        return json.loads(body)["id_token"]


@contextmanager
def run_provider_mock(tmp: Path) -> Iterator[ProviderMock]:
    """``oidc-provider-mock`` requiring registered clients and a nonce, on a free port of 127.0.0.1."""
    port = free_port()
    log = tmp / "oidc-provider-mock.log"
    command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port),
               "--require-registration", "--require-nonce"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ready(proc, base + "/.well-known/openid-configuration", log, _START_TIMEOUT, "oidc-provider-mock")
        yield ProviderMock(base, proc)
    finally:
        stop_group(proc)


@dataclass
class JwtIssuer:
    base_url: str  # also its issuer
    proc: subprocess.Popen[bytes]
    context: ssl.SSLContext | None = None  # over HTTPS: trusting its CA

    def mint(self, claims: dict[str, Any], alg: str = "RS256", key: str = "current") -> str:
        status, _, body = http_call(self.base_url + "/mint", {"claims": claims, "alg": alg, "key": key}, context=self.context)
        assert status == 200, body
        return json.loads(body)["token"]

    def rotate(self) -> None:
        assert http_call(self.base_url + "/rotate", {}, context=self.context)[0] == 200

    def jwks_fetches(self) -> int:
        return json.loads(http_call(self.base_url + "/stats", context=self.context)[2])["jwks_fetches"]

    def stop(self) -> None:
        stop_group(self.proc)


@contextmanager
def run_jwt_issuer(tmp: Path, tls: tuple[str, str, str] | None = None) -> Iterator[JwtIssuer]:
    """The issuer on a free port; with ``tls`` (CA file, certificate, key) over HTTPS as ``https://localhost:PORT``."""
    port = free_port()
    log = tmp / "jwt-issuer.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.peers.jwt_issuer", str(port), *(tls[1:] if tls else ())], stdout=out,
                                stderr=subprocess.STDOUT, cwd=_REPO, env={**os.environ, "PYTHONPATH": str(_REPO)},
                                start_new_session=True)  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=tls[0]) if tls else None
        base = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _START_TIMEOUT
        while _reachable(base + "/stats", context) is False:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jwt issuer did not start\n{log_tail(log)}")
            time.sleep(0.05)
        yield JwtIssuer(base, proc, context)
    finally:
        stop_group(proc)
