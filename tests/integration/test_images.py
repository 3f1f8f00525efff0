"""The images scripts/build-images makes: present, and they run what the tests need."""

from __future__ import annotations

import pytest
import requests

from helpers import free_port, wait_until

pytestmark = pytest.mark.docker

BUSYBOX = "reconciler-test/busybox:latest"
SANDBOX = "reconciler/sandbox:latest"


def _run_to_exit(client, name: str, image: str, command: list[str], **kwargs) -> tuple[int, str]:
    """Create (never pull), start, wait; return (exit code, output)."""
    container = client.containers.create(image, command, name=name, **kwargs)
    container.start()
    code = container.wait(timeout=60)["StatusCode"]
    return code, container.logs().decode(errors="replace")


@pytest.mark.parametrize("image", [BUSYBOX, SANDBOX])
def test_image_exists(docker_client, image):
    # Built by scripts/build-images; a missing one is a setup bug, not a skip.
    docker_client.images.get(image)


def test_busybox_config(docker_client):
    config = docker_client.images.get(BUSYBOX).attrs["Config"]
    assert config["Cmd"] == ["sh"]
    assert "PATH=/bin" in config["Env"]


def test_busybox_sh_echo(docker_client, instance):
    code, out = _run_to_exit(docker_client, f"{instance}-echo", BUSYBOX, ["sh", "-c", "echo ok"])
    assert (code, out) == (0, "ok\n")


def test_busybox_rootfs_layout(docker_client, instance):
    script = "ls -ld /tmp; id -u nobody; test -d /www && echo www"
    code, out = _run_to_exit(docker_client, f"{instance}-layout", BUSYBOX, ["sh", "-c", script])
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("drwxrwxrwt"), out
    assert lines[1:] == ["65534", "www"]


def test_busybox_runs_as_nobody(docker_client, instance):
    code, out = _run_to_exit(docker_client, f"{instance}-nobody", BUSYBOX, ["id"], user="nobody")
    assert code == 0 and "uid=65534(nobody)" in out, out


def test_busybox_httpd_serves(docker_client, instance):
    port = free_port()
    container = docker_client.containers.create(
        BUSYBOX,
        ["sh", "-c", "echo hello-from-httpd > /www/index.html && exec httpd -f -p 8000 -h /www"],
        name=f"{instance}-httpd",
        ports={"8000/tcp": ("127.0.0.1", port)},
        init=True,  # busybox httpd as PID 1 ignores SIGTERM
    )
    container.start()

    def fetch():
        resp = requests.get(f"http://127.0.0.1:{port}/", timeout=1)
        return resp if resp.status_code == 200 else None

    resp = wait_until(fetch, timeout=10, message="busybox httpd through the published port")
    assert resp.text == "hello-from-httpd\n"
    # And from inside, with the image's own wget.
    code, (out, _) = container.exec_run(["wget", "-qO-", "http://127.0.0.1:8000/"], demux=True)
    assert code == 0 and out == b"hello-from-httpd\n"


def test_sandbox_imports_fastapi_uvicorn(docker_client, instance):
    code, out = _run_to_exit(docker_client, f"{instance}-imports", SANDBOX,
                             ["python3", "-c", "import fastapi, uvicorn; print('ok')"])
    assert (code, out) == (0, "ok\n")


def test_sandbox_serves_fastapi_app(docker_client, instance):
    app = (
        "import fastapi, uvicorn\n"
        "app = fastapi.FastAPI()\n"
        "@app.get('/health')\n"
        "def health():\n"
        "    return {'ok': True}\n"
        "uvicorn.run(app, host='0.0.0.0', port=8000, log_level='warning')\n"
    )
    container = docker_client.containers.create(SANDBOX, ["python3", "-c", app],
                                                name=f"{instance}-fastapi", init=True)
    container.start()
    probe = ["python3", "-c",
             "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/health').read().decode())"]

    def answered():
        code, (out, _) = container.exec_run(probe, demux=True)
        return code == 0 and out

    out = wait_until(answered, timeout=20, interval=0.2, message="uvicorn in the sandbox image")
    assert out.strip() == b'{"ok":true}'
