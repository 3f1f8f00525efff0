"""Upload sources: resolving them safely, hashing them, packing them as tar.

A spec's ``source`` is relative to the spec file and must stay inside the
specs directory, following symlinks: a link that leads outside is refused,
so a spec can never copy ``/etc/shadow`` or ``~/.ssh`` into a sandbox.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator


class UploadPathError(ValueError):
    """An upload source that is missing or leaves its allowed root."""


@dataclass(frozen=True)
class UploadEntry:
    """One file or directory to create in the container, at ``target``."""

    target: str  # absolute path in the container
    is_dir: bool
    mode: int
    source: Path | None = None  # host file to read (None: inline content or dir)
    content: bytes | None = None
    digest: str = ""  # sha256 of the file's bytes ("" for directories)


@dataclass(frozen=True)
class ResolvedUpload:
    target: str
    entries: tuple[UploadEntry, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.target}\0{int(e.is_dir)}\0{e.mode:o}\0{e.digest}\n".encode())
        return h.hexdigest()


# File timestamps tick coarsely (a jiffy on Linux, seconds elsewhere): two writes
# of the same size within one tick look identical. A file changed this recently
# is not trusted from a cache ("racy git"): it is read again next time.
RACY_NS = 1_000_000_000

StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    """What identifies one version of a file: ctime changes on every write or rename."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def is_racy(st: os.stat_result) -> bool:
    return time.time_ns() - st.st_mtime_ns < RACY_NS


@dataclass
class DigestCache:
    """File digests keyed by path and stat_key: unchanged files are not re-read."""

    files: dict[str, tuple[StatKey, str]] = field(default_factory=dict)

    def digest(self, path: Path, st: os.stat_result) -> str:
        key = str(path)
        hit = self.files.get(key)
        if hit and hit[0] == stat_key(st):
            return hit[1]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        value = h.hexdigest()
        if is_racy(st):
            self.files.pop(key, None)
        else:
            self.files[key] = (stat_key(st), value)
        return value


def is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _real_path(path: Path, root: Path) -> Path:
    """``path`` with every symlink followed; a link loop is the user's error, not a crash."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError up to 3.12, OSError(ELOOP) after
        raise UploadPathError(f'"{os.path.relpath(path, root)}" is a symlink loop') from exc


def resolve_source(root: Path, base: Path, source: str) -> Path:
    """The real path of ``source`` (relative to ``base``), refused unless it is inside ``root``.

    Both the lexical path and the path with every symlink followed must stay
    inside, so ``../x`` and a link pointing outside are both refused.
    """
    real_root = root.resolve()
    if os.path.isabs(source):
        raise UploadPathError(f'expected a path relative to the spec file, got "{source}"')
    lexical = Path(os.path.normpath(base.resolve() / source))
    if not is_within(lexical, real_root):
        raise UploadPathError(f'"{source}" is outside the specs directory')
    real = _real_path(lexical, real_root)
    if not is_within(real, real_root):
        raise UploadPathError(f'"{source}" leads outside the specs directory (through a symlink)')
    if not real.exists():
        raise UploadPathError(f'"{source}" does not exist')
    return real


def _walk(top: Path, root: Path, rel: PurePosixPath = PurePosixPath(), seen: frozenset[Path] = frozenset()) -> Iterator[tuple[PurePosixPath, Path, bool]]:
    """(relative path, real path, is_dir) under ``top``, sorted; links are followed
    only while they stay inside ``root``, and never in a loop."""
    real_top = _real_path(top, root)
    if real_top in seen:
        raise UploadPathError(f'"{os.path.relpath(top, root)}" is a symlink loop')
    seen = seen | {real_top}
    for child in sorted(top.iterdir(), key=lambda p: p.name):
        real = _real_path(child, root)
        if child.is_symlink() and not is_within(real, root):
            raise UploadPathError(f'"{os.path.relpath(child, root)}" leads outside the specs directory (through a symlink)')
        if not real.exists():
            raise UploadPathError(f'"{os.path.relpath(child, root)}" is a broken symlink')
        child_rel = rel / child.name
        if real.is_dir():
            yield child_rel, real, True
            yield from _walk(real, root, child_rel, seen)
        elif real.is_file():
            yield child_rel, real, False
        # Sockets, fifos and devices are not files anyone means to upload.


def resolve_upload(
    root: Path,
    base: Path,
    target: str,
    source: str | None,
    content: str | None,
    mode: int | None,
    cache: DigestCache | None = None,
) -> ResolvedUpload:
    """Expand one spec upload into the entries to create in the container."""
    cache = cache or DigestCache()
    if content is not None:
        data = content.encode()
        entry = UploadEntry(
            target=target,
            is_dir=False,
            mode=mode if mode is not None else 0o644,
            content=data,
            digest=hashlib.sha256(data).hexdigest(),
        )
        return ResolvedUpload(target, (entry,))
    assert source is not None
    real_root = root.resolve()
    src = resolve_source(root, base, source)
    if src.is_file():
        st = src.stat()
        entry = UploadEntry(
            target=target,
            is_dir=False,
            mode=mode if mode is not None else stat.S_IMODE(st.st_mode),
            source=src,
            digest=cache.digest(src, st),
        )
        return ResolvedUpload(target, (entry,))
    entries = [UploadEntry(target=target, is_dir=True, mode=0o755)]
    for rel, real, is_dir in _walk(src, real_root):
        dest = str(PurePosixPath(target) / rel)
        if is_dir:
            entries.append(UploadEntry(target=dest, is_dir=True, mode=0o755))
            continue
        st = real.stat()
        entries.append(
            UploadEntry(
                target=dest,
                is_dir=False,
                mode=mode if mode is not None else stat.S_IMODE(st.st_mode),
                source=real,
                digest=cache.digest(real, st),
            )
        )
    return ResolvedUpload(target, tuple(entries))


def build_tar(uploads: list[ResolvedUpload] | tuple[ResolvedUpload, ...]) -> bytes:
    """One tar archive, to extract at ``/``, that creates every upload.

    Entry names are relative (no leading ``/``) and have no ``..``. Parent
    directories get no entries of their own: Docker creates missing ones (0755)
    and leaves existing ones alone, whereas an entry for ``tmp/`` would reset
    the image's ``/tmp`` from 1777 to 0755.
    """
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            if name in seen or not name:
                return
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        for upload in uploads:
            for entry in upload.entries:
                name = entry.target.lstrip("/")
                if entry.is_dir:
                    # The target itself only when the source dir is empty: it may
                    # be an existing directory of the image (/tmp, /www).
                    if entry.target != upload.target or len(upload.entries) == 1:
                        add_dir(name, entry.mode)
                    continue
                info = tarfile.TarInfo(name)
                info.mode = entry.mode
                if entry.content is not None:
                    info.size = len(entry.content)
                    tar.addfile(info, io.BytesIO(entry.content))
                else:
                    assert entry.source is not None
                    info.size = entry.source.stat().st_size
                    with open(entry.source, "rb") as f:
                        tar.addfile(info, f)
                seen.add(name)
    return buf.getvalue()
