"""Traefik's default certificate file (reconciler/default_cert.py): made once, valid, kept."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML

from reconciler.default_cert import COMMON_NAME, DEFAULT_CERT_FILE, ensure_default_certificate
from reconciler.traefik import Route, publish


def default_certificate(directory: Path) -> dict:
    data = YAML(typ="safe").load((directory / DEFAULT_CERT_FILE).read_text())
    return data["tls"]["stores"]["default"]["defaultCertificate"]


def test_the_file_is_traefik_config_with_a_matching_certificate_and_key(tmp_path):
    assert ensure_default_certificate(tmp_path) is True
    pair = default_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate(pair["certFile"].encode())
    key = serialization.load_pem_private_key(pair["keyFile"].encode(), password=None)
    assert cert.subject.rfc4514_string() == f"CN={COMMON_NAME}"
    assert cert.issuer == cert.subject  # self-signed
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*public) == key.public_key().public_bytes(*public)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc


def test_it_is_private_and_no_temp_file_is_left(tmp_path):
    ensure_default_certificate(tmp_path)
    assert stat.S_IMODE((tmp_path / DEFAULT_CERT_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_CERT_FILE]


def test_an_existing_file_is_never_overwritten(tmp_path):
    ensure_default_certificate(tmp_path)
    first = (tmp_path / DEFAULT_CERT_FILE).read_text()
    assert ensure_default_certificate(tmp_path) is False
    assert (tmp_path / DEFAULT_CERT_FILE).read_text() == first
    own = "# my own certificate\ntls: {}\n"
    (tmp_path / DEFAULT_CERT_FILE).write_text(own)
    assert ensure_default_certificate(tmp_path) is False
    assert (tmp_path / DEFAULT_CERT_FILE).read_text() == own


def test_each_directory_gets_its_own_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ensure_default_certificate(tmp_path / "a")
    ensure_default_certificate(tmp_path / "b")
    assert default_certificate(tmp_path / "a")["keyFile"] != default_certificate(tmp_path / "b")["keyFile"]


def test_publish_brings_a_deleted_certificate_back_even_when_the_routes_are_unchanged(tmp_path):
    routes = [Route("rc-default-api", "api.localhost", "http://10.213.0.2:8000")]
    assert publish(tmp_path, routes, "default") is True
    (tmp_path / DEFAULT_CERT_FILE).unlink()
    assert publish(tmp_path, routes, "default") is False  # the routes file is unchanged ...
    assert (tmp_path / DEFAULT_CERT_FILE).exists()  # ... and the certificate is back


def test_threads_racing_to_write_it_all_succeed_and_leave_one_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda _: ensure_default_certificate(tmp_path), range(8)))
    assert any(written)
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_CERT_FILE]
    default_certificate(tmp_path)  # one whole, parsable file


def test_an_unwritable_directory_is_not_an_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert ensure_default_certificate(blocker) is False
