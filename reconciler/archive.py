"""Tar streams in and out of sandboxes, with no Docker in sight.

Out (upload): a host file or directory becomes a tar stream generated on the
fly, one chunk at a time, so a 100 MB file never sits in memory.

In (download): the archive comes from a container, which we do not trust. It
is extracted into a private staging directory next to the target and moved into
place only when every entry passed; a refused entry leaves nothing behind.
Refused: absolute names, ``..``, entries outside the requested path, symlinks
that are absolute or lead outside the target, hard links to anything but a file
of this archive, devices and fifos, and any write through a symlink. Modes lose
their setuid/setgid/sticky bits; nothing is chowned.
"""

from __future__ import annotations

import io
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

from .errors import UserError

CHUNK = 1 << 20
BLOCK = 512

# (bytes done, bytes in total or None when unknown)
Progress = Callable[[int, int | None], None]


class ArchiveError(UserError):
    """An archive refused, or a transfer that could not be completed."""


# --- out: host files as a tar stream -------------------------------------------


@dataclass(frozen=True)
class SourceEntry:
    rel: str  # posix path below the top ("" for the top itself)
    path: Path
    kind: Literal["dir", "file", "symlink"]
    size: int
    mode: int
    mtime: float
    link: str = ""


def scan_source(src: Path) -> tuple[list[SourceEntry], list[str]]:
    """What uploading ``src`` sends, and what it skips (sockets, fifos, devices).

    A symlink named as ``src`` itself is followed (the user named it); links
    below a directory are sent as links, as ``docker cp`` does."""
    top = src.resolve() if src.is_symlink() else src
    entries: list[SourceEntry] = []
    skipped: list[str] = []

    def add(rel: str, path: Path) -> bool:
        st = os.lstat(path)
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime
        if stat.S_ISLNK(st.st_mode):
            entries.append(SourceEntry(rel, path, "symlink", 0, mode, mtime, os.readlink(path)))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(SourceEntry(rel, path, "dir", 0, mode, mtime))
            return True
        elif stat.S_ISREG(st.st_mode):
            entries.append(SourceEntry(rel, path, "file", st.st_size, mode, mtime))
        else:
            skipped.append(str(path))
        return False

    if add("", top):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = Path(dirpath)
            rel_base = os.path.relpath(dirpath, top)
            for name in sorted(dirnames + filenames):
                rel = name if rel_base == "." else f"{rel_base}/{name}"
                add(rel.replace(os.sep, "/"), base / name)
            # os.walk does not descend into symlinked dirs (followlinks=False): sent as links.
    return entries, skipped


def _header(name: str, kind: bytes, mode: int, mtime: float, owner: tuple[int, int], size: int = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = int(mtime)
    info.uid, info.gid = owner
    info.size = size
    info.linkname = link
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_stream(
    entries: list[SourceEntry],
    top: str,
    parents: Iterable[str] = (),
    owner: tuple[int, int] = (0, 0),
    include_top_dir: bool = True,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The tar archive of ``entries`` named ``top/...``, after directory entries for
    ``parents`` (missing parent directories, created 0755), chunk by chunk.

    ``include_top_dir=False`` leaves out the top directory's own entry, so an
    existing directory it lands on keeps its mode and owner."""
    total = sum(e.size for e in entries if e.kind == "file")
    done = 0
    now = time.time()
    for parent in parents:
        yield _header(parent, tarfile.DIRTYPE, 0o755, now, owner)
    for entry in entries:
        name = f"{top}/{entry.rel}" if entry.rel else top
        if entry.kind == "dir":
            if entry.rel or include_top_dir:
                yield _header(name, tarfile.DIRTYPE, entry.mode, entry.mtime, owner)
            continue
        if entry.kind == "symlink":
            yield _header(name, tarfile.SYMTYPE, 0o777, entry.mtime, owner, link=entry.link)
            continue
        yield _header(name, tarfile.REGTYPE, entry.mode, entry.mtime, owner, size=entry.size)
        left = entry.size
        with open(entry.path, "rb") as f:
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise ArchiveError(f"{entry.path} got shorter while it was being uploaded; upload it again")
                left -= len(chunk)
                done += len(chunk)
                yield chunk
                if progress:
                    progress(done, total)
        if entry.size % BLOCK:
            yield b"\0" * (BLOCK - entry.size % BLOCK)
    yield b"\0" * (2 * BLOCK)
    if progress and total == 0:
        progress(0, 0)


# --- in: a container's tar stream, extracted safely ------------------------------


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - memoryview from io
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@dataclass(frozen=True)
class Extracted:
    target: Path
    files: int
    bytes: int


def _refuse(name: str, why: str) -> ArchiveError:
    return ArchiveError(f'refused the download: archive entry "{name}" {why}; nothing was written')


def _inside(name: str, top: str) -> list[str]:
    """The path components of entry ``name`` below the top entry, or a refusal."""
    if "\x00" in name:
        raise _refuse(name.replace("\x00", "\\0"), "has a NUL byte in its name")
    if name.startswith("/"):
        raise _refuse(name, "has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "has '..' in its path")
    if not parts or parts[0] != top:
        raise _refuse(name, f'is outside the requested path "{top}"')
    return parts[1:]


def _link_escapes(rel: list[str], link: str) -> bool:
    """True when a symlink at ``rel`` (below the target) pointing at ``link`` leaves the target."""
    if not rel:
        return True  # the target itself a symlink: it points somewhere else by definition
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(rel)), link))
    return resolved == ".." or resolved.startswith("../")


class _Staging:
    """A private directory that the archive is unpacked into, component by component."""

    def __init__(self, target: Path) -> None:
        self.root = target.parent / f".{target.name}.reconcile-{secrets.token_hex(4)}.part"
        os.mkdir(self.root, 0o700)
        self.data = self.root / "data"
        self.dir_modes: dict[Path, int] = {}

    def path(self, name: str, rel: list[str]) -> Path:
        """Where ``rel`` goes, with every parent a real directory (created when missing)."""
        if not rel:
            return self.data
        for depth in range(len(rel)):
            current = self.data.joinpath(*rel[:depth])
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o700)
                self.dir_modes.setdefault(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise _refuse(name, "would be written through a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise _refuse(name, "would be written below a file")
        return self.data.joinpath(*rel)

    def clear(self, name: str, path: Path, is_dir: bool) -> None:
        """Make room for a repeated entry; a directory is only ever replaced by a directory."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not is_dir:
                raise _refuse(name, "would replace a directory with a file")
            return
        os.unlink(path)

    def finish_modes(self) -> None:
        # Deepest first, so a read-only directory is closed after its children are written.
        for path in sorted(self.dir_modes, key=lambda p: len(p.parts), reverse=True):
            os.chmod(path, self.dir_modes[path])

    def discard(self) -> None:
        for path in self.dir_modes:
            try:
                os.chmod(path, 0o700)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def extract(
    chunks: Iterable[bytes],
    top: str,
    target: Path,
    progress: Progress | None = None,
    total: int | None = None,
) -> Extracted:
    """Extract a container's archive whose top entry is ``top`` so that it becomes ``target``.

    An existing directory ``target`` is merged into (files replaced); an existing
    file is replaced. Any refused entry aborts the whole download before anything
    is moved into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _Staging(target)
    files = written = 0
    try:
        try:
            tar = tarfile.open(fileobj=_ChunkReader(chunks), mode="r|")
        except tarfile.TarError as exc:
            raise ArchiveError(f"the download is not a tar archive: {exc}") from exc
        with tar:
            for member in tar:
                rel = _inside(member.name, top)
                path = staging.path(member.name, rel)
                if member.isdir():
                    staging.clear(member.name, path, is_dir=True)
                    if not os.path.lexists(path):
                        os.mkdir(path, 0o700)
                    staging.dir_modes[path] = (member.mode & 0o777) | 0o700
                elif member.isreg():
                    staging.clear(member.name, path, is_dir=False)
                    source = tar.extractfile(member)
                    assert source is not None
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        for chunk in iter(lambda: source.read(CHUNK), b""):
                            out.write(chunk)
                            written += len(chunk)
                            if progress:
                                progress(written, total)
                        os.fchmod(out.fileno(), member.mode & 0o777)
                    os.utime(path, (member.mtime, member.mtime))
                    files += 1
                elif member.issym():
                    if member.linkname.startswith("/"):
                        raise _refuse(member.name, f'is a symlink to the absolute path "{member.linkname}" (outside DEST)')
                    if _link_escapes(rel, member.linkname):
                        raise _refuse(member.name, f'is a symlink pointing outside DEST ("{member.linkname}")')
                    staging.clear(member.name, path, is_dir=False)
                    os.symlink(member.linkname, path)
                elif member.islnk():
                    if member.linkname.startswith("/"):
                        raise _refuse(member.name, f'is a hard link to the absolute path "{member.linkname}"')
                    link_rel = _inside(member.linkname, top)
                    source_path = staging.data.joinpath(*link_rel)
                    try:
                        linked = os.lstat(source_path)
                    except FileNotFoundError:
                        linked = None
                    if linked is None or not stat.S_ISREG(linked.st_mode):
                        raise _refuse(member.name, f'is a hard link to "{member.linkname}", which is not a file of this archive')
                    staging.clear(member.name, path, is_dir=False)
                    os.link(source_path, path, follow_symlinks=False)
                    files += 1
                elif member.ischr() or member.isblk() or member.isfifo():
                    raise _refuse(member.name, "is a device file or fifo")
                else:
                    raise _refuse(member.name, f"has an unsupported type {member.type!r}")
        if not os.path.lexists(staging.data):
            raise ArchiveError("the download was an empty archive; nothing was written")
        staging.finish_modes()
        _install(staging.data, target)
    except tarfile.TarError as exc:
        staging.discard()
        raise ArchiveError(f"the download is a broken tar archive: {exc}; nothing was written") from exc
    except BaseException:
        staging.discard()
        raise
    staging.discard()
    return Extracted(target=target, files=files, bytes=written)


def _install(staged: Path, target: Path) -> None:
    """Move the checked tree into place: a rename, or a merge into an existing directory."""
    if not os.path.lexists(target):
        os.rename(staged, target)
        return
    staged_dir = stat.S_ISDIR(os.lstat(staged).st_mode)
    target_dir = stat.S_ISDIR(os.lstat(target).st_mode)  # a symlink is not a directory here
    if staged_dir != target_dir:
        what = "directory" if staged_dir else "file"
        raise ArchiveError(f"{target} exists and is not a {what}; choose another DEST")
    if not staged_dir:
        os.replace(staged, target)
        return
    moves: list[tuple[Path, Path, bool]] = []
    for dirpath, dirnames, filenames in os.walk(staged):
        rel = Path(dirpath).relative_to(staged)
        for name in sorted(dirnames + filenames):
            src = Path(dirpath) / name
            dst = target / rel / name
            src_dir = stat.S_ISDIR(os.lstat(src).st_mode)
            if os.path.lexists(dst):
                dst_st = os.lstat(dst)
                if stat.S_ISLNK(dst_st.st_mode) and src_dir:
                    raise ArchiveError(f"{dst} is a symlink; the download will not write through it")
                if stat.S_ISDIR(dst_st.st_mode) != src_dir:
                    raise ArchiveError(f"{dst} exists and is not a {'directory' if src_dir else 'file'}")
                if src_dir:
                    continue  # merged into, entry by entry
            moves.append((src, dst, src_dir))
    moved_dirs: set[Path] = set()
    for src, dst, src_dir in moves:
        if any(parent in moved_dirs for parent in src.parents):
            continue  # came along with a directory moved whole
        os.replace(src, dst)
        if src_dir:
            moved_dirs.add(src)
