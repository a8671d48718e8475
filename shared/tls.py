"""TLS settings for `tls+tcp://` addresses, with the traps of pynng 0.9 / Mbed TLS 3.6 avoided.

(research/stack.md §1.8) A client must name the server: Mbed TLS refuses to verify a peer without
a host name, even when dialing by IP. `AUTH_MODE_NONE` passed to the constructor is silently
ignored in 0.9, and is never what we want anyway: nodes always verify the hub. The hub requires
client certificates (mTLS) whenever it is given a CA to check them with.

TLS gives confidentiality and, with mTLS, a second identity check; the frame MAC (shared.wire)
stays the authenticator either way.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Final

import pynng

from shared.config import ConfigError

# TLS files are configuration: a missing or unusable one is a config error (exit 2), not a bug.
_PEM_HINT: Final = " (give PEM files: a certificate and its private key, or a CA certificate)"


def is_tls(address: str) -> bool:
    """True for tls+tcp://, tls+tcp4:// and tls+tcp6:// addresses."""
    return address.partition("://")[0] in ("tls+tcp", "tls+tcp4", "tls+tcp6")


def hub_tls_config(cert_key_file: Path, ca_file: Path | None = None) -> pynng.TLSConfig:
    """Server side. `cert_key_file` holds the hub's certificate and key in one PEM file;
    with `ca_file`, every node must present a certificate signed by it."""
    _check_readable(cert_key_file, "hub certificate+key file")
    if ca_file is not None:
        _check_readable(ca_file, "client CA file")
    try:
        config = pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER, cert_key_file=str(cert_key_file))
        if ca_file is not None:
            config.add_ca_file(str(ca_file))
            config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
    except pynng.NNGException as exc:
        files = f"{cert_key_file}" + (f" / {ca_file}" if ca_file else "")
        raise ConfigError(f"{files}: TLS files not usable: {exc}{_PEM_HINT}") from exc
    return config


def node_tls_config(
    ca_file: Path, server_name: str, cert_key_file: Path | None = None
) -> pynng.TLSConfig:
    """Client side: verify the hub against `ca_file` under `server_name` (a DNS or IP SAN of
    the hub's certificate); present `cert_key_file` when the hub requires client certificates."""
    if not server_name:
        raise ConfigError(
            "TLS server_name is required: Mbed TLS will not verify the hub without it "
            "(use a DNS name or IP address from the hub certificate's SAN)"
        )
    _check_readable(ca_file, "hub CA file")
    if cert_key_file is not None:
        _check_readable(cert_key_file, "node certificate+key file")
    try:
        config = pynng.TLSConfig(
            pynng.TLSConfig.MODE_CLIENT, server_name=server_name, ca_files=[str(ca_file)]
        )
        # Explicit, not via the constructor kwarg (see the module docstring).
        config.set_auth_mode(pynng.TLSConfig.AUTH_MODE_REQUIRED)
        if cert_key_file is not None:
            config.set_cert_key_file(str(cert_key_file))
    except pynng.NNGException as exc:
        files = f"{ca_file}" + (f" / {cert_key_file}" if cert_key_file else "")
        raise ConfigError(f"{files}: TLS files not usable: {exc}{_PEM_HINT}") from exc
    return config


def cert_fingerprint(pem_file: Path) -> str:
    """SHA-256 of the first certificate in a PEM file (hex), for advertising and pinning."""
    text = _read(pem_file, "certificate file")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError(f"{pem_file}: no PEM certificate found")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError as exc:
        raise ValueError(f"{pem_file}: certificate is not valid PEM: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def _check_readable(path: Path, what: str) -> None:
    _read(path, what)


def _read(path: Path, what: str) -> str:
    # nng reports a missing or unreadable file only as a bare error code: name it ourselves.
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: {exc.strerror or exc} (fix the path in the config)"
        ) from exc
