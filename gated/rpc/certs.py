"""A private CA and the certificates of one venue: `gated certs make`.

The registry and every gate authenticate each other with mutual TLS. For the
simulator, the tests and a small venue, this makes a CA, a server
certificate for the registry (localhost, 127.0.0.1, ::1 and any extra
hosts) and one client certificate per gate whose subject CN is the gate id:
the registry reads the gate id from there. Private keys are EC P-256
(quick to make, small handshakes) and written with mode 0600.

Files in the output directory: ca.pem, ca.key, registry.pem, registry.key,
gate-<id>.pem, gate-<id>.key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GATE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VALID_DAYS = 825


@dataclass(frozen=True, slots=True)
class CertPaths:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class VenueCerts:
    ca: Path
    ca_key: Path
    registry: CertPaths
    gates: dict[str, CertPaths]


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _issue(
    subject_cn: str,
    ca_cert: x509.Certificate | None,
    ca_key: ec.EllipticCurvePrivateKey | None,
    *,
    server_names: Sequence[str] = (),
    client: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    is_ca = ca_cert is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if is_ca else ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        sans: list[x509.GeneralName] = []
        for host in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        if client:
            sans.append(x509.DNSName(subject_cn))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key if is_ca else ca_key, hashes.SHA256())
    return cert, key


def make_venue_certs(out: str | os.PathLike[str], gate_ids: Sequence[str], hosts: Sequence[str] = (),
                     api_clients: Sequence[str] = ()) -> VenueCerts:
    """Write a CA, the registry's server certificate, one client certificate per gate, and one per
    API integration (subject CN "api:NAME": the registry's HTTP API takes it instead of a token)."""
    out = Path(out)
    for gate_id in (*gate_ids, *api_clients):
        if not GATE_ID_RE.fullmatch(gate_id):
            raise ValueError(f"gate id or API client {gate_id!r} must be 1 to 64 characters from A-Z a-z 0-9 _ . -")
    if len(set(gate_ids)) != len(gate_ids) or len(set(api_clients)) != len(api_clients):
        raise ValueError("a gate id or API client appears twice")
    out.mkdir(parents=True, exist_ok=True)

    def save(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPaths:
        paths = CertPaths(out / f"{stem}.pem", out / f"{stem}.key")
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(paths.key, _key_pem(key), 0o600)
        return paths

    ca_cert, ca_key = _issue("gated venue CA", None, None)
    ca = save("ca", ca_cert, ca_key)
    names = ["localhost", "127.0.0.1", "::1", *hosts]
    registry = save("registry", *_issue("gated registry", ca_cert, ca_key, server_names=names))
    gates = {gid: save(f"gate-{gid}", *_issue(gid, ca_cert, ca_key, client=True)) for gid in gate_ids}
    for name in api_clients:
        save(f"api-{name}", *_issue(f"api:{name}", ca_cert, ca_key, client=True))
    return VenueCerts(ca.cert, ca.key, registry, gates)
