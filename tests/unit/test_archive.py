"""archive.py without Docker: the upload tar stream, and the download extractor
fed hand-crafted hostile archives (the ones a real engine never produces, like
absolute names and ``..``, live here; what a real container can hold is tested
against the engine in tests/integration/test_download_safety.py)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from reconciler.archive import CHUNK, ArchiveError, extract, scan_source, tar_stream


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info


def chunks(data: bytes, size: int = 700) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    """A download destination, and a file next to it that no download may touch."""
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    return {"dest": dest, "outside": outside, "root": tmp_path}


def tree(root: Path) -> dict[str, object]:
    """Every path below ``root`` with what it is: bytes, a link target, or 'dir'."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


# --- upload stream -------------------------------------------------------------------


def make_source(root: Path) -> Path:
    src = root / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.bin").write_bytes(bytes(range(256)) * 41)  # not a multiple of 512
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "sub" / "run.sh").chmod(0o755)
    (src / "sub" / "deep" / "empty").write_bytes(b"")
    os.symlink("sub/run.sh", src / "link")
    return src


def test_upload_stream_round_trips_files_modes_and_links(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    entries, skipped = scan_source(src)
    data = b"".join(tar_stream(entries, "src"))
    out = tmp_path / "out"
    extract(chunks(data), "src", out)
    assert tree(out) == tree(src)
    assert skipped == []


def test_upload_stream_is_a_valid_tar_with_missing_parents_first(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    entries, _ = scan_source(src)
    data = b"".join(tar_stream(entries, "a/b/src", parents=["a", "a/b"], owner=(1000, 1001)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["a", "a/b", "a/b/src"]
    assert {(m.uid, m.gid) for m in members} == {(1000, 1001)}
    assert all(m.isdir() and m.mode == 0o755 for m in members[:2])


def test_an_existing_top_directory_gets_no_entry_of_its_own(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    entries, _ = scan_source(src)
    data = b"".join(tar_stream(entries, "src", include_top_dir=False))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "src" not in names and "src/a.bin" in names


def test_upload_stream_never_holds_a_large_file_in_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    entries, _ = scan_source(big)
    digest = hashlib.sha256()
    seen: list[tuple[int, int | None]] = []
    tracemalloc.start()
    try:
        for chunk in tar_stream(entries, "big.bin", progress=lambda done, total: seen.append((done, total))):
            assert len(chunk) <= CHUNK + 512 * 4
            digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak {peak} bytes: the file was read whole"
    assert seen[-1] == (24 << 20, 24 << 20)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 24


def test_a_file_that_shrinks_while_uploading_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 5000)
    entries, _ = scan_source(src)
    stream = tar_stream(entries, "f.bin")
    next(stream)  # the header, with the size at scan time
    src.write_bytes(b"x" * 10)
    with pytest.raises(ArchiveError, match="got shorter"):
        list(stream)


def test_sockets_and_fifos_are_skipped_not_sent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    (src / "keep").write_text("k")
    entries, skipped = scan_source(src)
    assert [e.rel for e in entries] == ["", "keep"]
    assert skipped == [str(src / "pipe")]


def test_a_symlink_named_as_the_source_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("content")
    os.symlink(real, tmp_path / "alias")
    entries, _ = scan_source(tmp_path / "alias")
    assert [(e.kind, e.size) for e in entries] == [("file", 7)]


# --- download: good archives ------------------------------------------------------------


def test_extract_into_a_new_target(place) -> None:
    data = tar_of((entry("d", tarfile.DIRTYPE, mode=0o750), None), (entry("d/f"), b"hello"),
                  (entry("d/l", tarfile.SYMTYPE, "f"), None), (entry("d/h", tarfile.LNKTYPE, "d/f"), None))
    done = extract(chunks(data), "d", place["dest"] / "out")
    out = place["dest"] / "out"
    assert (out / "f").read_bytes() == b"hello" and os.readlink(out / "l") == "f"
    assert os.stat(out / "h").st_ino == os.stat(out / "f").st_ino
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert (done.files, done.bytes) == (2, 5)
    assert sorted(p.name for p in place["dest"].iterdir()) == ["out"]  # no staging left


def test_extract_merges_into_an_existing_directory(place) -> None:
    target = place["dest"] / "d"
    (target / "keep").mkdir(parents=True)
    (target / "keep" / "mine.txt").write_text("mine")
    (target / "f").write_text("old")
    data = tar_of((entry("d", tarfile.DIRTYPE), None), (entry("d/f"), b"new"),
                  (entry("d/keep", tarfile.DIRTYPE), None), (entry("d/keep/theirs.txt"), b"t"))
    extract(chunks(data), "d", target)
    assert (target / "f").read_text() == "new"
    assert sorted(os.listdir(target / "keep")) == ["mine.txt", "theirs.txt"]


def test_extract_replaces_a_file_target(place) -> None:
    target = place["dest"] / "result.json"
    target.write_text("old")
    extract(chunks(tar_of((entry("x.json"), b"{}"),)), "x.json", target)
    assert target.read_text() == "{}"


def test_setuid_bits_are_dropped(place) -> None:
    data = tar_of((entry("f", mode=0o6755), b"#!"),)
    extract(chunks(data), "f", place["dest"] / "f")
    assert stat.S_IMODE((place["dest"] / "f").stat().st_mode) == 0o755


# --- download: refused archives ---------------------------------------------------------------

HOSTILE = {
    "absolute name": ([(entry("/etc/evil"), b"x")], "absolute path"),
    "dotdot name": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/../../outside.txt"), b"x")], "'..'"),
    "outside the requested path": ([(entry("d", tarfile.DIRTYPE), None), (entry("other/f"), b"x")],
                                   "outside the requested path"),
    "absolute symlink": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/l", tarfile.SYMTYPE, "/etc/passwd"), None)],
                         "absolute path"),
    "escaping symlink": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/l", tarfile.SYMTYPE, "../../outside.txt"), None)],
                         "pointing outside DEST"),
    "escaping symlink from deep down": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/a", tarfile.DIRTYPE), None),
                                         (entry("d/a/l", tarfile.SYMTYPE, "../.."), None)], "pointing outside DEST"),
    "the top itself a symlink": ([(entry("d", tarfile.SYMTYPE, "d2"), None)], "pointing outside DEST"),
    "hard link outside": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/h", tarfile.LNKTYPE, "etc/passwd"), None)],
                          "outside the requested path"),
    "hard link absolute": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/h", tarfile.LNKTYPE, "/etc/passwd"), None)],
                           "hard link to the absolute path"),
    "hard link to a symlink": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/l", tarfile.SYMTYPE, "x"), None),
                                (entry("d/h", tarfile.LNKTYPE, "d/l"), None)], "not a file of this archive"),
    "char device": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/null", tarfile.CHRTYPE), None)], "device file"),
    "block device": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/sda", tarfile.BLKTYPE), None)], "device file"),
    "fifo": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/p", tarfile.FIFOTYPE), None)], "fifo"),
    "write through its own symlink": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/l", tarfile.SYMTYPE, "sub"), None),
                                       (entry("d/sub", tarfile.DIRTYPE), None), (entry("d/l/f"), b"x")],
                                      "through a symlink"),
    "a file replacing a directory": ([(entry("d", tarfile.DIRTYPE), None), (entry("d/x", tarfile.DIRTYPE), None),
                                      (entry("d/x"), b"x")], "replace a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_is_written(place, case: str) -> None:
    members, reason = HOSTILE[case]
    data = tar_of(*members)
    with pytest.raises(ArchiveError) as caught:
        extract(chunks(data), "d", place["dest"] / "d")
    message = str(caught.value)
    assert reason in message and "nothing was written" in message
    assert list(place["dest"].iterdir()) == []  # no target, no staging directory
    assert place["outside"].read_text() == "precious\n"
    assert sorted(p.name for p in place["root"].iterdir()) == ["dest", "outside.txt"]


def test_good_entries_before_a_bad_one_are_not_kept(place) -> None:
    data = tar_of((entry("d", tarfile.DIRTYPE), None), (entry("d/good.txt"), b"fine" * 1000),
                  (entry("d/evil", tarfile.SYMTYPE, "/etc"), None))
    with pytest.raises(ArchiveError, match='"d/evil"'):
        extract(chunks(data), "d", place["dest"] / "d")
    assert list(place["dest"].iterdir()) == []


def test_a_symlink_already_in_dest_is_not_written_through(place) -> None:
    # DEST/d/sub -> the outside world, made before the download (by anyone).
    target = place["dest"] / "d"
    target.mkdir()
    elsewhere = place["root"] / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "sub")
    data = tar_of((entry("d", tarfile.DIRTYPE), None), (entry("d/sub", tarfile.DIRTYPE), None),
                  (entry("d/sub/f"), b"x"))
    with pytest.raises(ArchiveError, match="symlink"):
        extract(chunks(data), "d", target)
    assert list(elsewhere.iterdir()) == []
    assert sorted(os.listdir(target)) == ["sub"]


def test_truncated_archive_leaves_nothing(place) -> None:
    data = tar_of((entry("d", tarfile.DIRTYPE), None), (entry("d/f"), b"y" * 100_000))
    with pytest.raises(ArchiveError):
        extract(chunks(data[:20_000]), "d", place["dest"] / "d")
    assert list(place["dest"].iterdir()) == []


def test_empty_archive_is_an_error(place) -> None:
    with pytest.raises(ArchiveError, match="empty"):
        extract([b"\0" * 1024], "d", place["dest"] / "d")
    assert list(place["dest"].iterdir()) == []
