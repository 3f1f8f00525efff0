"""Upload sources: expansion, digests, the tar archive, and symlinks."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from reconciler.uploads import DigestCache, UploadPathError, build_tar, resolve_upload


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A specs dir with ``site/``: index.html, css/style.css, run.sh (0755)."""
    specs = tmp_path / "specs"
    (specs / "site" / "css").mkdir(parents=True)
    (specs / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (specs / "site" / "css" / "style.css").write_text("h1 {}\n")
    (specs / "site" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(specs / "site" / "run.sh", 0o755)
    os.chmod(specs / "site" / "index.html", 0o644)
    os.chmod(specs / "site" / "css" / "style.css", 0o644)
    return specs


def upload(root: Path, source: str, target: str = "/www", mode: int | None = None):  # noqa: ANN201
    return resolve_upload(root, root, target, source, None, mode)


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_file(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_directory_upload_expands_to_every_file_and_dir(root: Path) -> None:
    up = upload(root, "site/")
    shown = [(e.target, e.is_dir, oct(e.mode)) for e in up.entries]
    assert shown == [
        ("/www", True, "0o755"),
        ("/www/css", True, "0o755"),
        ("/www/css/style.css", False, "0o644"),
        ("/www/index.html", False, "0o644"),
        ("/www/run.sh", False, "0o755"),
    ]


def test_single_file_upload(root: Path) -> None:
    up = upload(root, "site/index.html", "/srv/page.html", mode=0o600)
    assert [(e.target, e.is_dir, e.mode) for e in up.entries] == [("/srv/page.html", False, 0o600)]


def test_inline_content(root: Path) -> None:
    up = resolve_upload(root, root, "/www/index.html", None, "hello\n", None)
    [entry] = up.entries
    assert (entry.target, entry.content, entry.mode) == ("/www/index.html", b"hello\n", 0o644)


def test_digest_follows_file_bytes(root: Path) -> None:
    before = upload(root, "site/").digest
    assert upload(root, "site/").digest == before  # stable
    page = root / "site" / "index.html"
    page.write_text("<h1>HI</h1>\n")  # same size, other bytes
    assert upload(root, "site/").digest != before
    page.write_text("<h1>hi</h1>\n")
    assert upload(root, "site/").digest == before


def test_digest_follows_names_modes_and_new_files(root: Path) -> None:
    before = upload(root, "site/").digest
    os.chmod(root / "site" / "run.sh", 0o700)
    after_mode = upload(root, "site/").digest
    assert after_mode != before
    (root / "site" / "new.txt").write_text("")
    after_new = upload(root, "site/").digest
    assert after_new != after_mode
    assert upload(root, "site/", target="/srv").digest != after_new


def test_digest_cache_rereads_a_changed_file(root: Path) -> None:
    cache = DigestCache()
    page = root / "site" / "index.html"
    stamp = 1_000_000_000_000_000_000  # long ago: trusted by the cache
    os.utime(page, ns=(stamp, stamp))
    first = resolve_upload(root, root, "/www", "site/", None, None, cache).digest
    assert str(page.resolve()) in cache.files
    page.write_text("<h1>HO</h1>\n")
    os.utime(page, ns=(stamp, stamp))  # same size and mtime: only ctime tells
    assert resolve_upload(root, root, "/www", "site/", None, None, cache).digest != first


def test_tar_entries_are_relative_and_leave_parents_to_docker(root: Path) -> None:
    uploads = [
        upload(root, "site/", "/srv/www"),
        resolve_upload(root, root, "/etc/app/conf.ini", None, "x=1\n", 0o640),
    ]
    data = build_tar(uploads)
    members = tar_members(data)
    # No entries for srv/, srv/www/, etc/, etc/app/: an entry for an existing
    # directory would reset its mode (/tmp 1777 -> 0755); Docker makes missing ones.
    assert list(members) == [
        "srv/www/css",
        "srv/www/css/style.css",
        "srv/www/index.html",
        "srv/www/run.sh",
        "etc/app/conf.ini",
    ]
    for name in members:
        assert not name.startswith("/") and ".." not in Path(name).parts
    assert members["srv/www/run.sh"].mode == 0o755
    assert members["etc/app/conf.ini"].mode == 0o640
    assert members["srv/www/css"].isdir()
    assert tar_file(data, "srv/www/index.html") == b"<h1>hi</h1>\n"
    assert tar_file(data, "etc/app/conf.ini") == b"x=1\n"


def test_tar_has_no_duplicate_entries(root: Path) -> None:
    uploads = [upload(root, "site/", "/www"), resolve_upload(root, root, "/www/extra.txt", None, "x", None)]
    with tarfile.open(fileobj=io.BytesIO(build_tar(uploads))) as tar:
        names = tar.getnames()
    assert len(names) == len(set(names))
    assert "www/extra.txt" in names


def test_symlink_inside_root_is_followed(root: Path) -> None:
    (root / "shared").mkdir()
    (root / "shared" / "logo.svg").write_text("<svg/>\n")
    (root / "site" / "logo.svg").symlink_to(root / "shared" / "logo.svg")
    (root / "site" / "assets").symlink_to("../shared")
    up = upload(root, "site/")
    targets = {e.target: e for e in up.entries}
    assert not targets["/www/logo.svg"].is_dir
    assert targets["/www/assets"].is_dir and "/www/assets/logo.svg" in targets
    data = build_tar([up])
    assert tar_file(data, "www/logo.svg") == b"<svg/>\n"
    assert tar_members(data)["www/logo.svg"].isfile()  # the content, not a link


def test_symlink_loop_is_refused(root: Path) -> None:
    (root / "site" / "again").symlink_to(".")
    with pytest.raises(UploadPathError, match='"site" is a symlink loop'):
        upload(root, "site/")


def test_mutual_symlink_loop_is_refused(root: Path) -> None:
    (root / "site" / "a").symlink_to("b")
    (root / "site" / "b").symlink_to("a")
    with pytest.raises(UploadPathError, match='"site/a" is a symlink loop'):
        upload(root, "site/")


def test_broken_symlink_is_refused(root: Path) -> None:
    (root / "site" / "gone").symlink_to("nothing-here")
    with pytest.raises(UploadPathError, match='"site/gone" is a broken symlink'):
        upload(root, "site/")


def test_symlink_outside_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (root / "site" / "secret").symlink_to(tmp_path / "secret")
    with pytest.raises(UploadPathError, match='"site/secret" leads outside the specs directory'):
        upload(root, "site/")


def test_source_relative_to_the_spec_file_not_the_root(root: Path) -> None:
    (root / "team").mkdir()
    (root / "team" / "page.html").write_text("p\n")
    up = resolve_upload(root, root / "team", "/p.html", "page.html", None, None)
    assert up.entries[0].source == (root / "team" / "page.html").resolve()
    # ../site from team/ is still inside the specs dir: allowed.
    assert resolve_upload(root, root / "team", "/www", "../site", None, None).entries[0].is_dir


def test_an_empty_source_dir_still_creates_its_target(root: Path) -> None:
    (root / "empty").mkdir()
    members = tar_members(build_tar([upload(root, "empty/", "/data/empty")]))
    assert list(members) == ["data/empty"] and members["data/empty"].isdir()
