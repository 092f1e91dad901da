"""An OpenID provider's token side, as its own process: discovery, a JWKS that rotates, and JWT access tokens.

``oidc-provider-mock`` (tests/peers/oidc.py) signs only RS256 ID tokens with one key it never rotates, and its
access tokens are opaque. This peer serves what it lacks, over real HTTP on a free port:

- ``GET /.well-known/openid-configuration`` and ``GET /jwks`` (an RSA key for RS256, an EC P-256 key for ES256);
- ``POST /mint`` ``{"claims": {...}, "alg": "RS256"|"ES256"|"HS256"|"none", "key": "current"|"retired"|"unpublished"}``
  signs the claims as asked: ``HS256`` with the published RSA key's PEM as the HMAC secret (the algorithm-confusion
  attack), ``none`` unsigned, ``retired`` with a key dropped by the last rotation, ``unpublished`` with a key never
  published;
- ``POST /rotate`` publishes new keys (new kids) in place of the old;
- ``GET /stats`` counts the JWKS fetches, to see a verifier's cache and its rate limit.

Run: ``python -m tests.peers.jwt_issuer PORT [CERT KEY]`` (with a certificate and key: over HTTPS, as
``https://localhost:PORT``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _KeyPair:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid, self.ec_kid = f"rsa-{uuid.uuid4().hex[:8]}", f"ec-{uuid.uuid4().hex[:8]}"

    def jwks(self) -> list[dict[str, Any]]:
        rsa_jwk = {**RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": self.rsa_kid, "use": "sig", "alg": "RS256"}
        ec_jwk = {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": self.ec_kid, "use": "sig", "alg": "ES256"}
        return [rsa_jwk, ec_jwk]


class Issuer:
    def __init__(self, base: str) -> None:
        self.base = base
        self.current, self.retired, self.unpublished = _KeyPair(), None, _KeyPair()
        self.jwks_fetches = 0
        self.lock = threading.Lock()

    def mint(self, claims: dict[str, Any], alg: str, which: str) -> str:
        pair = {"current": self.current, "retired": self.retired, "unpublished": self.unpublished}[which]
        assert pair is not None, "no key was retired yet"
        if alg == "RS256":
            return jwt.encode(claims, pair.rsa, algorithm="RS256", headers={"kid": pair.rsa_kid})
        if alg == "ES256":
            return jwt.encode(claims, pair.ec, algorithm="ES256", headers={"kid": pair.ec_kid})
        header = {"alg": alg, "typ": "JWT", "kid": pair.rsa_kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        if alg == "none":
            return signing_input + "."
        if alg == "HS256":  # the public key, as anyone can fetch it, used as an HMAC secret
            secret = pair.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        raise ValueError(f"unknown alg {alg}")


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/.well-known/openid-configuration":
                b = issuer.base
                self._send(200, {"issuer": b, "jwks_uri": b + "/jwks", "authorization_endpoint": b + "/authorize",
                                 "token_endpoint": b + "/token", "id_token_signing_alg_values_supported": ["RS256", "ES256"]})  # fmt: skip
            elif self.path == "/jwks":
                with issuer.lock:
                    issuer.jwks_fetches += 1
                    keys = issuer.current.jwks()
                self._send(200, {"keys": keys})
            elif self.path == "/stats":
                self._send(200, {"jwks_fetches": issuer.jwks_fetches})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path == "/mint":
                with issuer.lock:
                    token = issuer.mint(body["claims"], body.get("alg", "RS256"), body.get("key", "current"))
                self._send(200, {"token": token})
            elif self.path == "/rotate":
                with issuer.lock:
                    issuer.retired, issuer.current = issuer.current, _KeyPair()
                self._send(200, {"kids": [issuer.current.rsa_kid, issuer.current.ec_kid]})
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            sys.stderr.write(f"{self.command} {self.path}\n")

    return Handler


def main() -> None:
    port = int(sys.argv[1])
    tls = len(sys.argv) == 4
    issuer = Issuer(f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(issuer))
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
