"""Traefik's default TLS certificate, made once and kept in the dynamic directory.

Without a ``tls.stores.default.defaultCertificate`` Traefik 3 generates a fresh
self-signed RSA-2048 certificate on EVERY configuration reload. Measured here: a
write of the routes file took a median 95-110 ms (p95 ~270 ms, key generation
time is random) to the first 200 through the new route; with a default
certificate in the directory the same write takes 11 ms (bench/, BENCHMARKS.md
"spec → routable"). So the reconciler writes one, an EC P-256 self-signed
certificate, inline (PEM content, not paths: the file works unchanged when
Traefik runs in a container with only the directory mounted).

The file is made only when missing and never overwritten: replace its content
with a certificate of your own and it stays. No client trusts the generated
certificate, exactly as none trusts the one Traefik would generate; routers with
a certificate resolver (``--tls-resolver``) get real certificates as before.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

DEFAULT_CERT_FILE = "reconciler-default-cert.yml"
COMMON_NAME = "reconciler default certificate"
VALID_DAYS = 3650


def ensure_default_certificate(directory: Path) -> bool:
    """Write ``directory/reconciler-default-cert.yml`` unless it exists; True when written.

    Never raises for a directory it cannot write or a missing ``cryptography``:
    without the file Traefik only reloads slower, and the routes must still go out."""
    target = directory / DEFAULT_CERT_FILE
    if target.exists():
        return False
    try:
        cert_pem, key_pem = generate_self_signed(COMMON_NAME)
        directory.mkdir(parents=True, exist_ok=True)
        # mkstemp: a name no other thread or process uses, created 0600 (it holds a
        # private key; Traefik started by `reconcile up` runs as the same user, and
        # one in a container as root). A non-YAML suffix while it is written:
        # Traefik reads every .yml/.yaml/.toml of the directory.
        fd, tmp = tempfile.mkstemp(prefix=f".{DEFAULT_CERT_FILE}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(render_certificate_file(cert_pem, key_pem))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (ImportError, OSError):
        return False
    return True


def render_certificate_file(cert_pem: str, key_pem: str) -> str:
    """Traefik dynamic configuration naming ``cert_pem``/``key_pem`` the default certificate."""

    def block(pem: str) -> str:
        return "".join(f"          {line}\n" for line in pem.strip().splitlines())

    return (
        "# Written by reconciler once, never overwritten: Traefik's default certificate, so a reload does\n"
        "# not generate a new RSA key each time (~100 ms per reload). Replace it with your own if you like.\n"
        "tls:\n"
        "  stores:\n"
        "    default:\n"
        "      defaultCertificate:\n"
        "        certFile: |\n" + block(cert_pem)
        + "        keyFile: |\n" + block(key_pem)
    )


def generate_self_signed(common_name: str, days: int = VALID_DAYS) -> tuple[str, str]:
    """A self-signed EC P-256 certificate and its key, both PEM."""
    # Imported here: only the first publish into a directory pays for it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem
