"""The SCP's side of DICOM TLS (PS3.15 Annex B): the handshake on the TLS port, and client certificates bound to
the calling AE titles they may use."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from gateway.tls import peer_names


class HandshakeFailed(Exception):
    """The TLS handshake did not complete; the message names why (an OpenSSL reason, never a byte the peer sent)."""


async def start_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext,
                    timeout: float) -> tuple[str, ...]:  # fmt: skip
    """Turn an accepted connection into TLS; returns the names of the client certificate (none shown: empty).

    A trusted proxy's PROXY header is read before the handshake, and the stream reader may already hold the
    first bytes of the ClientHello that came in the same segment: those are handed to the TLS layer before
    anything more is read from the socket, else the handshake would wait for bytes it will never see.
    """
    early = _take_buffered(reader)
    try:
        async with asyncio.timeout(timeout):
            if early:
                await _start_tls_with(writer, context, early)
            else:
                await writer.start_tls(context)
    except TimeoutError:
        raise HandshakeFailed(f"no handshake within {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise HandshakeFailed(exc.reason or type(exc).__name__) from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise HandshakeFailed(f"connection lost ({type(exc).__name__})") from None
    return tuple(peer_names(writer.get_extra_info("ssl_object")))


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    # StreamReader has no public way to hand back what it buffered; its buffer is a bytearray in CPython 3.11+.
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    early = bytes(buffer)
    buffer.clear()
    return early


async def _start_tls_with(writer: asyncio.StreamWriter, context: ssl.SSLContext, early: bytes) -> None:
    """``writer.start_tls`` with ``early`` fed to the TLS layer first.

    ``StreamWriter.start_tls`` installs the TLS protocol on the socket's transport and schedules its
    ``connection_made`` and the transport's ``resume_reading``; the bytes are given to the TLS protocol (a
    buffered protocol) once those have run, which is before the socket is read again.
    """
    raw = writer.transport
    before = raw.get_protocol()
    upgrade = asyncio.ensure_future(writer.start_tls(context))
    while raw.get_protocol() is before and not upgrade.done():
        await asyncio.sleep(0)
    if not upgrade.done():
        await asyncio.sleep(0)  # its connection_made has now run
        protocol = raw.get_protocol()
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(protocol.get_buffer(len(early)))
            size = min(len(view), len(early))
            view[:size] = early[:size]
            protocol.buffer_updated(size)
            if size < len(early):  # the TLS layer offered less room than a ClientHello: it cannot go on
                upgrade.cancel()
                raise HandshakeFailed("the first TLS record did not fit")
        else:
            protocol.data_received(early)  # type: ignore[attr-defined]
    await upgrade


class AeBinding:
    """Mutual TLS bound to AE titles (``dicom_tls.client_aets``): which calling AE titles a client certificate may
    use. A certificate is known by its subject CN or any of its DNS subjectAltNames (compared without case); a
    connection without a certificate, or with one that no entry names, may use no AE title at all."""

    def __init__(self, binding: Mapping[str, frozenset[str]]) -> None:
        self.binding = {name.lower(): aets for name, aets in binding.items()}

    def __bool__(self) -> bool:
        return bool(self.binding)

    def allows(self, certificate: tuple[str, ...], calling_ae: str) -> bool:
        return any(calling_ae in self.binding.get(name.lower(), ()) for name in certificate)
