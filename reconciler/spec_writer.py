"""Writing spec files: ``reconcile new`` and ``Sandbox.create`` both come here,
so both write exactly the same file.

The text is ruamel.yaml block style, readable and editable: the command as a flow
list, multi-line inline content as a literal block, and any string YAML would
read as something else quoted. What is written loads back, through the loader,
to the spec that was validated here before anything touched the disk.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from .errors import InvalidArgument, UserError
from .loader import SPEC_SUFFIXES, display_path, is_spec_file
from .spec import API_VERSION, SandboxSpec, format_duration
from .uploads import UploadPathError, resolve_upload

HEADER = "Written by `reconcile new`. Edit freely: `reconcile apply` (or a running watch loop) converges to it."


@dataclass(frozen=True)
class NewSandbox:
    """The options of ``reconcile new`` / ``Sandbox.create``."""

    name: str
    image: str
    port: int | None = None
    ttl: str | int | None = None  # "2h" or seconds
    command: Sequence[str] | str | None = None  # exec form, or a string run by /bin/sh -c
    env: Mapping[str, str] = field(default_factory=dict)
    uploads: Sequence[tuple[str, str]] = ()  # (source relative to the specs dir, target)
    files: Mapping[str, str] = field(default_factory=dict)  # target -> inline content
    workdir: str | None = None
    egress: bool = True
    pool: str | None = None  # claim a warm member of this pool (a spec of kind Pool) when one matches


def spec_data(new: NewSandbox) -> dict[str, Any]:
    """The spec as plain data, only the fields that were given."""
    body: dict[str, Any] = {"image": new.image}
    if new.pool is not None:
        body["pool"] = new.pool
    if new.command is not None:
        body["command"] = new.command if isinstance(new.command, str) else list(new.command)
    if new.workdir is not None:
        body["workdir"] = new.workdir
    if new.port is not None:
        body["port"] = new.port
    if new.ttl is not None:
        body["ttl"] = format_duration(new.ttl) if isinstance(new.ttl, int) else new.ttl
    if not new.egress:
        body["egress"] = False
    if new.env:
        body["env"] = dict(new.env)
    uploads = [{"source": source, "target": target} for source, target in new.uploads]
    uploads += [{"content": content, "target": target} for target, content in new.files.items()]
    if uploads:
        body["uploads"] = uploads
    return {"apiVersion": API_VERSION, "kind": "Sandbox", "metadata": {"name": new.name}, "spec": body}


def check(data: dict[str, Any], specs_dir: Path) -> SandboxSpec:
    """Validate ``data`` as the loader would, upload sources included; InvalidArgument if not."""
    try:
        spec = SandboxSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
            problems.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise InvalidArgument("; ".join(problems)) from exc
    for upload in spec.spec.uploads:
        if upload.source is None:
            continue
        try:
            resolve_upload(specs_dir, specs_dir, upload.target, upload.source, None, None)
        except (UploadPathError, OSError) as exc:
            raise InvalidArgument(
                f"upload {upload.source}: {exc} (upload sources are paths inside the specs directory "
                f"{display_path(specs_dir)}; for other files use `reconcile upload` once the sandbox runs)"
            ) from exc
    return spec


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in ("str", "list[str]", "none") or "[" in part)


def render(data: dict[str, Any]) -> str:
    """The YAML text of a spec: a comment line, then the fields in the spec's own order."""
    doc = _commented(data)
    doc.yaml_set_start_comment(HEADER)
    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 120
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _commented(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        node = CommentedMap()
        for k, v in value.items():
            node[DoubleQuotedScalarString(k) if _yaml11_reads_otherwise(k) else k] = _commented(v, k)
        return node
    if isinstance(value, list):
        if key == "command":
            # One line, like a shell command; items YAML 1.1 parsers (PyYAML, libyaml)
            # would misread inside [...] are quoted, e.g. "main:app".
            seq = CommentedSeq(DoubleQuotedScalarString(v) if _needs_quotes_in_flow(v) else _commented(v) for v in value)
            seq.fa.set_flow_style()
            return seq
        return CommentedSeq(_commented(v) for v in value)
    if isinstance(value, str) and "\n" in value and _literal_safe(value):
        return LiteralScalarString(value)
    if isinstance(value, str) and _yaml11_reads_otherwise(value):
        return DoubleQuotedScalarString(value)
    return value


_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off"}


def _yaml11_reads_otherwise(text: str) -> bool:
    """YAML 1.2 (ruamel, our loader) reads these as strings, YAML 1.1 tools
    (PyYAML, many editors) as booleans or numbers: quote them for both."""
    return text.lower() in _YAML11_WORDS or bool(re.fullmatch(r"[-+]?\d+(:[0-5]?\d)+(\.\d*)?", text))


_FLOW_SPECIAL = frozenset(":,[]{}#&*!|>'\"%@`")


def _needs_quotes_in_flow(text: str) -> bool:
    return bool(_FLOW_SPECIAL & set(text)) or not text.isprintable() or text != text.strip()


def _literal_safe(text: str) -> bool:
    """A literal block keeps text exactly only when it holds no other control
    characters and no line starts with spaces before a non-space first line."""
    if any(ch != "\n" and not ch.isprintable() for ch in text):
        return False
    return not text.startswith((" ", "\n")) and "\r" not in text


def spec_files_for(specs_dir: Path, name: str) -> list[Path]:
    """The spec files that declare ``metadata.name: name`` (valid or not)."""
    found = []
    try:
        entries = sorted(os.scandir(specs_dir), key=lambda e: e.name)
    except OSError:
        return []
    yaml = YAML(typ="rt")  # YAML 1.2, as the loader reads it
    for entry in entries:
        if not is_spec_file(entry.name) or not entry.is_file():
            continue
        try:
            doc = yaml.load(Path(entry.path).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable file declares no name
            continue
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        if isinstance(meta, dict) and meta.get("name") == name:
            found.append(Path(entry.path))
    return found


def spec_path(specs_dir: Path, name: str) -> Path:
    return specs_dir / f"{name}{SPEC_SUFFIXES[0]}"


def write_new(specs_dir: Path, name: str, text: str) -> Path:
    """Write ``text`` as ``<specs>/<name>.yaml``; never overwrites a file or a name in use.

    Atomic: the file appears complete (temp file, then a hard link that fails if
    the name exists), so a watch loop never reads half of it."""
    specs_dir.mkdir(parents=True, exist_ok=True)
    target = spec_path(specs_dir, name)
    taken = spec_files_for(specs_dir, name) or [p for p in (specs_dir / f"{name}{s}" for s in SPEC_SUFFIXES) if p.exists()]
    if taken:
        raise UserError(
            f'sandbox "{name}" already has a spec file: {display_path(taken[0])}; '
            f"pick another name, edit that file, or `reconcile delete {name}` first"
        )
    # A dotfile with a .tmp suffix: the loader and the watch loop ignore it.
    tmp = specs_dir / f".{name}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise UserError(f"{display_path(target)} already exists; pick another name") from None
    except OSError:
        # No hard links on this filesystem: exclusive create, then the text.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise UserError(f"{display_path(target)} already exists; pick another name") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)
    return target
