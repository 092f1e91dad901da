"""What checking an identity provider's JWT adds to a request once the provider's keys are cached.

Two measures in one run, against the same real provider process (tests/peers/jwt_issuer.py, RS256 and ES256 keys):

1. *check*: the gateway's own check (``OidcTokens.user``: header, key from the cache, signature, claims, the role
   mapping and the account remembered), timed alone in this process, wall clock and this thread's CPU time, a new
   token each time (its first use, so its sign-in is recorded too: the dearest case; no verdict is remembered per
   token anyway);
2. *HTTP*: ``GET /auth/me`` against a gateway process, with a JWT and with a gateway token (the peer: what every
   request pays anyway), interleaved, and the difference of their percentiles.

Target (issue 13): p99 of the added time under 2 ms.

    .venv/bin/python -m bench.auth_jwt [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import machine


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(at(0.50) * 1000, 3), "p99_ms": round(at(0.99) * 1000, 3), "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


def claims(issuer: str, n: int) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "aud": "pacs-gateway", "sub": "bench-user", "iat": now, "nbf": now, "exp": now + 3600,
            "jti": f"t-{n}", "preferred_username": "dr.bench", "realm_access": {"roles": ["pacs-reader"]}}  # fmt: skip


async def time_check(issuer_url: str, tokens: list[str], data: Path) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread's) time of each check."""
    from gateway.audit import AuditWriter
    from gateway.http.oidc_keys import ProviderKeys
    from gateway.http.oidc_tokens import OidcTokens
    from gateway.settings_security import OidcSettings
    from storage.index.accounts import AccountStore
    from storage.index.database import IndexDatabase
    from storage.index.sso_accounts import SsoAccounts

    index = IndexDatabase.open(f"sqlite:///{data / 'index.sqlite'}")
    settings = OidcSettings(issuer=issuer_url, audience="pacs-gateway", role_map=["pacs-reader=radiologist"])
    keys = ProviderKeys(settings)
    sso = OidcTokens(settings, keys, SsoAccounts(index.engine), AuditWriter(AccountStore(index.engine)))
    try:
        await sso.user(tokens[0], None)  # keys fetched, account made: the state every later request finds
        await sso.user(tokens[1], None)
        wall, cpu = [], []
        for token in tokens[2:]:
            started, started_cpu = time.perf_counter(), time.thread_time()
            await sso.user(token, None)
            wall.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
        return wall, cpu
    finally:
        await keys.close()
        index.close()


def time_http(url: str, pairs: list[tuple[str, str]]) -> tuple[list[float], list[float]]:
    jwt_times, local_times = [], []
    for jwt_token, local_token in pairs:
        for token, into in ((jwt_token, jwt_times), (local_token, local_times)):
            request = urllib.request.Request(url + "/auth/me", headers={"Authorization": f"Bearer {token}"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                assert response.status == 200
            into.append(time.perf_counter() - started)
    return jwt_times, local_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/auth_jwt.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per measure and algorithm")
    args = parser.parse_args(argv)

    from tests.gateway_process import GatewayProcess
    from tests.peers.oidc import run_jwt_issuer

    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "requests": args.requests}
    with tempfile.TemporaryDirectory() as tmp, run_jwt_issuer(Path(tmp)) as issuer:
        for alg in ("RS256", "ES256"):
            tokens = [issuer.mint(claims(issuer.base_url, n), alg) for n in range(args.requests + 2)]
            check_dir = Path(tmp) / f"check-{alg}"
            check_dir.mkdir()
            wall, cpu = asyncio.run(time_check(issuer.base_url, tokens, check_dir))
            report[f"check_{alg}"] = {"wall": percentiles(wall), "cpu": percentiles(cpu)}

        gw = GatewayProcess(Path(tmp) / "gw", {"PACSGW_OIDC_ISSUER": issuer.base_url, "PACSGW_OIDC_AUDIENCE": "pacs-gateway",
                                               "PACSGW_OIDC_ROLE_MAP": "pacs-reader=radiologist"})  # fmt: skip
        gw.start()
        try:
            local = gw.add_user("dr.local", "radiologist")
            for alg in ("RS256", "ES256"):
                tokens = [issuer.mint(claims(issuer.base_url, n), alg) for n in range(args.requests + 50)]
                time_http(gw.base_url, [(t, local) for t in tokens[:50]])  # warm: keys fetched, account made, connections
                with_jwt, with_local = time_http(gw.base_url, [(t, local) for t in tokens[50:]])
                jwt_p, local_p = percentiles(with_jwt), percentiles(with_local)
                report[f"http_{alg}"] = {
                    "jwt": jwt_p, "gateway_token": local_p,
                    "added_p50_ms": round(jwt_p["p50_ms"] - local_p["p50_ms"], 3),
                    "added_p99_ms": round(jwt_p["p99_ms"] - local_p["p99_ms"], 3),
                    "ratio_p50": round(jwt_p["p50_ms"] / local_p["p50_ms"], 2),
                }  # fmt: skip
        finally:
            gw.kill()
    for alg in ("RS256", "ES256"):
        check = report[f"check_{alg}"]["wall"]["p99_ms"]
        report[f"target_{alg}"] = "met" if check < 2.0 and report[f"http_{alg}"]["added_p99_ms"] < 2.0 else "MISSED"
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
