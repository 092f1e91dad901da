"""The one TLS profile: TLS 1.2 or newer with BCP 195 suites, private keys kept private, certificates reloaded."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from gateway.tls import ReloadableServerContext, TlsConfigError, check_private_file, client_context, peer_names, server_context
from gateway.tls_certs import write_trial_set


@pytest.fixture
def trial(tmp_path: Path):
    return write_trial_set(tmp_path, ["localhost", "127.0.0.1"])


async def _serve(context: ssl.SSLContext, seen: list[list[str]]):
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_names(writer.get_extra_info("ssl_object")))
        writer.write(writer.get_extra_info("ssl_object").getpeercert(binary_form=False) and b"with" or b"without")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def test_key_files_others_may_read_are_refused(trial, tmp_path: Path) -> None:
    _, server = trial
    check_private_file(server.key_file, "key")
    assert os.stat(server.key_file).st_mode & 0o777 == 0o600
    os.chmod(server.key_file, 0o640)
    with pytest.raises(TlsConfigError, match="chmod 600"):
        server_context(str(server.cert_file), str(server.key_file))
    with pytest.raises(TlsConfigError, match="cannot read"):
        check_private_file(tmp_path / "missing.key", "key")


def test_nothing_below_tls_1_2_is_accepted(trial) -> None:
    ca, server = trial
    context = server_context(str(server.cert_file), str(server.key_file))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    offered = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert offered and all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in offered)

    async def attempt() -> None:
        srv, port = await _serve(context, [])
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(ca.cert_file)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await asyncio.open_connection("127.0.0.1", port, ssl=old, server_hostname="localhost")
        finally:
            srv.close()

    asyncio.run(attempt())


def test_a_client_certificate_names_its_holder_and_a_reload_keeps_connections(trial, tmp_path: Path) -> None:
    ca, server = trial
    client = ca.issue(tmp_path, "ct01", "CT01", client=True)
    reloadable = ReloadableServerContext(
        str(server.cert_file), str(server.key_file), client_ca_file=str(ca.cert_file), require_client_cert=True
    )
    seen: list[list[str]] = []

    async def talk() -> None:
        srv, port = await _serve(reloadable.context, seen)
        context = client_context(ca_file=str(ca.cert_file), cert_file=str(client.cert_file), key_file=str(client.key_file))
        reader, _ = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        assert await reader.read() == b"with"
        without = client_context(ca_file=str(ca.cert_file))
        try:  # TLS 1.3: the server's refusal of the missing certificate comes after the client's handshake
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=without, server_hostname="localhost")
            assert await reader.read() == b""
        except (ssl.SSLError, ConnectionError):
            pass
        # A new certificate for the same names: the next handshake shows it.
        renewed = ca.issue(tmp_path / "renewed", "server", "localhost", hosts=["localhost"])
        os.replace(renewed.cert_file, server.cert_file)
        os.replace(renewed.key_file, server.key_file)
        assert reloadable.reload()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        shown = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert shown == ssl.PEM_cert_to_DER_cert(server.cert_file.read_text())
        await reader.read()
        server.key_file.write_text("not a key")
        os.chmod(server.key_file, 0o600)
        assert not reloadable.reload()  # a broken file keeps the certificate in use
        reader, _ = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        assert await reader.read() == b"with"
        srv.close()

    asyncio.run(talk())
    assert seen[0] == ["CT01"]
