"""Hostile values in specs can never break the file Traefik loads.

Traefik runs every dynamic file through Go text/template and then a YAML parser,
and one bad file drops every route it serves. Env and label values are not
rendered into that file at all, and the values that are (names, hostnames) are
validated; these tests prove it end to end against the real Traefik."""

from __future__ import annotations

import json

import pytest
from ruamel.yaml import YAML

from helpers import run_cli
from reconciler.traefik import dynamic_filename

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

BUSYBOX = "reconciler-test/busybox:latest"

HOSTILE = {
    "H_TEMPLATE": "{{ .Env.HOME }}",
    "H_CLOSE": "}} {{/* comment */}} {{",
    "H_BACKTICK": "`) || Host(`evil.localhost`",
    "H_QUOTES": "\"double\" 'single' \\\"escaped\\\"",
    "H_NEWLINES": "line one\nhttp:\n  routers: {}\n",
    "H_YAML": "key: value\n- item\n&anchor *alias ! % @ #comment",
    "H_UNICODE": "é ✓ \u202e reversed",
}


def hostile_spec(name: str, hostname: str) -> dict:
    # Each value is written to /www/<KEY> by the sandbox itself, so the test can
    # read it back through Traefik: what went in is what the container got.
    script = "mkdir -p /www && for k in " + " ".join(HOSTILE) + "; do eval \"printf %s \\\"\\$$k\\\"\" > /www/$k; done" \
             " && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"
    return {
        "apiVersion": "reconciler/v1",
        "kind": "Sandbox",
        "metadata": {"name": name, "labels": {k.lower().replace("_", "-"): v for k, v in HOSTILE.items()}},
        "spec": {
            "image": BUSYBOX,
            "command": ["sh", "-c", script],
            "env": HOSTILE,
            "port": 8080,
            "hostname": hostname,
        },
    }


def write_spec(path, spec: dict) -> None:
    # JSON is YAML: every hostile character survives exactly.
    path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def apply(tmp_path, instance, traefik):
    return run_cli(["apply", "--specs", str(tmp_path / "specs"), "--traefik-dir", str(traefik.dynamic_dir),
                    "--state-dir", str(tmp_path / "state"), "--instance", instance,
                    "--web-port", str(traefik.web_port)], timeout=120)


def traefik_errors(traefik) -> list[str]:
    return [line for line in traefik.log_file.read_text(errors="replace").splitlines() if " ERR " in line]


def test_hostile_env_and_label_values(tmp_path, instance, traefik):
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs / "hostile.yaml", hostile_spec("hostile", "hostile"))
    result = apply(tmp_path, instance, traefik)
    assert result.returncode == 0, result.stdout + result.stderr

    rendered = (traefik.dynamic_dir / dynamic_filename(instance)).read_text()
    assert "{{" not in rendered and "}}" not in rendered
    data = YAML(typ="safe").load(rendered)
    assert list(data["http"]["routers"]) == [f"rc-{instance}-hostile"]
    for value in HOSTILE.values():
        assert value not in rendered

    traefik.wait_status("hostile.localhost", 200)
    router = traefik.router(f"rc-{instance}-hostile")
    assert router["status"] == "enabled" and router["rule"] == "Host(`hostile.localhost`)", router
    # The backtick value did not smuggle a second host into the rule.
    assert traefik.get("evil.localhost").status_code == 404
    for key, value in HOSTILE.items():
        resp = traefik.get("hostile.localhost", f"/{key}")
        assert resp.status_code == 200 and resp.content.decode() == value, key
    assert traefik_errors(traefik) == []


@pytest.mark.parametrize("field, value", [
    ("hostname", "evil`) || Host(`x"),
    ("hostname", "{{ .Env.HOME }}"),
    ("hostname", "a\nb"),
    ("name", "{{x}}"),
    ("name", "rc@file"),
])
def test_hostile_routed_values_are_refused_and_the_file_stays_good(tmp_path, instance, traefik, field, value):
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs / "good.yaml", hostile_spec("good", "good"))
    bad = hostile_spec("bad", "bad")
    if field == "name":
        bad["metadata"]["name"] = value
    else:
        bad["spec"]["hostname"] = value
    write_spec(specs / "bad.yaml", bad)

    result = apply(tmp_path, instance, traefik)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad.yaml" in result.stdout + result.stderr
    # The good sandbox is routed; the file Traefik loads holds only it.
    traefik.wait_status("good.localhost", 200)
    rendered = (traefik.dynamic_dir / dynamic_filename(instance)).read_text()
    assert "{{" not in rendered and value not in rendered
    assert list(YAML(typ="safe").load(rendered)["http"]["routers"]) == [f"rc-{instance}-good"]
    assert traefik_errors(traefik) == []
