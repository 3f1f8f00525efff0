"""A download never writes outside DEST, against real containers holding hostile
content: made inside the sandbox by its own processes (what a compromised agent
could do), or put into it as hand-crafted tar archives through the engine.

Absolute entry names and ``..`` cannot come out of a real engine (dockerd writes
the archive itself, with names relative to the path asked for); those are fed to
the same extractor in tests/unit/test_archive.py."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ops_helpers import private_place

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def box(request, docker_client, tmp_path_factory):
    """One sandbox "box" holding a hostile directory per case under /cases."""
    with private_place(request, docker_client, tmp_path_factory.mktemp("safety")) as shared:
        shared.new("box", port=None, command="sleep 600")
        made_inside = (
            "set -e; for c in abs-link up-link deep-up-link fifo good-links; do mkdir -p /cases/$c; "
            "echo fine > /cases/$c/good.txt; done; "
            "ln -s /etc/passwd /cases/abs-link/evil; "
            "ln -s ../../../../root /cases/up-link/evil; "
            "mkdir -p /cases/deep-up-link/a/b && ln -s ../../../.. /cases/deep-up-link/a/b/evil; "
            "mkfifo /cases/fifo/evil; "
            "ln -s good.txt /cases/good-links/alias && ln /cases/good-links/good.txt /cases/good-links/hard; "
            "mkdir -p /data/real && echo through > /data/real/x && ln -s /data/real /data/via-link"
        )
        assert shared.run("exec", "box", "--", "sh", "-c", made_inside).returncode == 0
        container = docker_client.api.containers(filters={"label": f"reconciler.instance={shared.instance}"})[0]["Id"]
        docker_client.api.put_archive(container, "/cases", crafted_tar())
        yield shared


def crafted_tar() -> bytes:
    """Hand-made entries the engine accepts into a container: device files, an absolute link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for case, name, kind, link in (
            ("char-device", "evil", tarfile.CHRTYPE, ""),
            ("block-device", "evil", tarfile.BLKTYPE, ""),
            ("put-abs-link", "evil", tarfile.SYMTYPE, "/root/.ssh/authorized_keys"),
        ):
            for path, data in ((case, None), (f"{case}/good.txt", b"fine\n")):
                info = tarfile.TarInfo(path)
                info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
                info.mode = 0o755
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
            info = tarfile.TarInfo(f"{case}/{name}")
            info.type, info.linkname, info.devmajor, info.devminor = kind, link, 1, 3
            tar.addfile(info)
    return buf.getvalue()


REFUSED = {
    "abs-link": 'is a symlink to the absolute path "/etc/passwd"',
    "up-link": "is a symlink pointing outside DEST",
    "deep-up-link": "is a symlink pointing outside DEST",
    "fifo": "is a device file or fifo",
    "char-device": "is a device file or fifo",
    "block-device": "is a device file or fifo",
    "put-abs-link": 'is a symlink to the absolute path "/root/.ssh/authorized_keys"',
}


@pytest.fixture
def dest(tmp_path: Path):
    """An empty DEST, and a file next to it that must never change."""
    target = tmp_path / "dest"
    target.mkdir()
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("untouched\n")
    return target, sentinel


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_hostile_content_is_refused_and_nothing_is_written(box, dest, case: str) -> None:
    target, sentinel = dest
    result = box.run("download", "box", f"/cases/{case}", str(target))
    assert result.returncode == 1
    entry = "deep-up-link/a/b/evil" if case == "deep-up-link" else f"{case}/evil"
    assert f'archive entry "{entry}" {REFUSED[case]}' in result.stderr
    assert "nothing was written" in result.stderr
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["dest", "sentinel.txt"]
    assert sentinel.read_text() == "untouched\n"


def test_the_api_refuses_the_same(box, dest) -> None:
    from reconciler.api import Sandbox
    from reconciler.archive import ArchiveError

    target, _ = dest
    with pytest.raises(ArchiveError, match="symlink pointing outside DEST"):
        Sandbox("box", box.settings).download("/cases/up-link", target)
    assert list(target.iterdir()) == []


def test_links_that_stay_inside_are_kept(box, dest) -> None:
    target, _ = dest
    assert box.run("download", "box", "/cases/good-links", str(target)).returncode == 0
    got = target / "good-links"
    assert os.readlink(got / "alias") == "good.txt"
    assert os.stat(got / "hard").st_ino == os.stat(got / "good.txt").st_ino
    assert (got / "hard").read_text() == "fine\n"


def test_a_symlink_named_as_src_is_followed(box, dest) -> None:
    target, _ = dest
    assert box.run("download", "box", "/data/via-link", str(target)).returncode == 0
    assert (target / "via-link" / "x").read_text() == "through\n"
    assert not (target / "via-link").is_symlink()


def test_a_symlink_already_in_dest_is_not_followed(box, tmp_path: Path) -> None:
    # DEST/real2/x points elsewhere before the download; the archive has a
    # directory real2/x: merging into DEST/real2 would write through the link.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "dest2"
    (target / "real2").mkdir(parents=True)
    os.symlink(elsewhere, target / "real2" / "x")
    assert box.run("exec", "box", "--", "sh", "-c", "mkdir -p /data/real2/x && echo y > /data/real2/x/f").returncode == 0
    result = box.run("download", "box", "/data/real2", str(target))
    assert result.returncode == 1 and "is a symlink; the download will not write through it" in result.stderr
    assert list(elsewhere.iterdir()) == []
    assert sorted(os.listdir(target)) == ["real2"] and os.listdir(target / "real2") == ["x"]
