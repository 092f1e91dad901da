"""The OHIF viewer as a DICOMweb client: the prebuilt app from npm, served same-origin with the gateway's DICOMweb.

``npm pack @ohif/app`` gives the built ``dist/`` (cached under
``.cache/ohif`` in the repository). Its ``app-config.js`` is replaced by one
whose only data source is the gateway. A small aiohttp server in a thread
serves the app and forwards ``/dicom-web`` and ``/wado`` to the gateway,
adding the bearer token, as a hospital's authenticating reverse proxy would.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.peers.ports import free_port

OHIF_VERSION = "3.12.10"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "ohif"

APP_CONFIG = """window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  defaultDataSourceName: 'gateway',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'gateway',
    configuration: {
      friendlyName: 'pacs-gateway',
      name: 'gateway',
      wadoUriRoot: '/wado',
      qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: true,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      staticWado: false,
      singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true },
    },
  }],
};
"""


def ohif_dist(workdir: Path) -> Path:
    """The app's ``dist/`` with the gateway's config, unpacked under ``workdir``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"ohif-app-{OHIF_VERSION}.tgz"
    if not tarball.exists():
        subprocess.run(["npm", "pack", f"@ohif/app@{OHIF_VERSION}", "--pack-destination", str(CACHE)], check=True, capture_output=True, timeout=600)
    target = workdir / "ohif"
    if target.exists():
        shutil.rmtree(target)
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    dist = target / "package" / "dist"
    (dist / "app-config.js").write_text(APP_CONFIG)
    return dist


@contextmanager
def serve_ohif(dist: Path, gateway_url: str, token: str, *, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve OHIF on a free port, forwarding DICOMweb to the gateway (over HTTPS trusting ``ssl_context``'s CA);
    yields the base URL."""
    port = free_port()
    session_key = web.AppKey("session", aiohttp.ClientSession)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: dict[str, web.AppRunner] = {}

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        headers["Authorization"] = f"Bearer {token}"
        session = request.app[session_key]
        async with session.request(request.method, gateway_url + request.path_qs, headers=headers, data=await request.read()) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type",)}
            return web.Response(status=upstream.status, body=body, headers=kept)

    async def static(request: web.Request) -> web.FileResponse:
        path = (dist / request.match_info["tail"]).resolve()
        if not path.is_file() or dist.resolve() not in path.parents:
            path = dist / "index.html"  # the app's own routes (/viewer, ...)
        return web.FileResponse(path)

    async def start() -> None:
        app = web.Application(client_max_size=1 << 30)
        app[session_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context or True))
        app.router.add_route("*", "/dicom-web/{tail:.*}", forward)
        app.router.add_route("*", "/wado", forward)
        app.router.add_get("/{tail:.*}", static)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box["runner"] = runner
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        async def stop() -> None:
            runner = runner_box["runner"]
            await runner.app[session_key].close()
            await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
