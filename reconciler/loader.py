"""Reading a specs directory into the desired state, with file:line:col errors.

Every file is read on its own: one bad file is an error value for that file,
never an exception that stops the others. A file that exists but is invalid
*protects* its sandbox: the planner leaves that sandbox exactly as it runs.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .errors import SpecError
from .spec import PoolSpec, SandboxSpec
from .uploads import DigestCache, ResolvedUpload, StatKey, UploadPathError, is_racy, resolve_upload, stat_key

SPEC_SUFFIXES = (".yaml", ".yml")
_BACKUP_SUFFIXES = ("~", ".swp", ".swo", ".tmp", ".bak", ".orig", ".part")


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec with its uploads resolved (and hashed)."""

    path: Path
    rel: str  # path relative to the specs dir, stored on the container
    spec: SandboxSpec
    uploads: tuple[ResolvedUpload, ...]
    # Values derived from this exact spec version (its hashes), kept while the
    # loader hands out the same object: a resync pass does not re-hash 1000 specs.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.metadata.name


@dataclass(frozen=True)
class LoadedPool:
    """A valid ``kind: Pool`` spec (a warm pool; see pools.py)."""

    path: Path
    rel: str
    spec: PoolSpec
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.metadata.name


@dataclass(frozen=True)
class Desired:
    """What the specs directory asks for, and what it could not read."""

    specs: dict[str, LoadedSpec]
    errors: tuple[SpecError, ...] = ()
    # Sandboxes whose spec file is present but invalid (by file and, when it
    # could be read, by name): never destroyed or recreated until fixed.
    protected_files: frozenset[str] = frozenset()
    protected_names: frozenset[str] = frozenset()
    # False when the directory itself could not be listed: then nothing is destroyed.
    complete: bool = True
    pools: dict[str, LoadedPool] = field(default_factory=dict)  # ``kind: Pool`` specs, by name


@dataclass
class _FileResult:
    key: StatKey
    spec: SandboxSpec | PoolSpec | None
    name: str | None
    name_pos: tuple[int, int] | None
    errors: list[SpecError]
    tree: Any = None


@dataclass
class LoadCache:
    """Parsed files keyed by path and stat_key, and upload digests:
    a resync with unchanged files parses nothing."""

    files: dict[str, _FileResult] = field(default_factory=dict)
    digests: DigestCache = field(default_factory=DigestCache)
    loaded: dict[str, LoadedSpec | LoadedPool] = field(default_factory=dict)  # by path: the last one handed out


def is_spec_file(name: str) -> bool:
    """Only ``*.yaml``/``*.yml``; dotfiles and editor temp/backup files are ignored."""
    if name.startswith((".", "#", "~")) or name.endswith(_BACKUP_SUFFIXES):
        return False
    return name.endswith(SPEC_SUFFIXES)


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the cwd when below it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load_specs(specs_dir: Path, cache: LoadCache | None = None) -> Desired:
    """Load every spec file in ``specs_dir`` (not recursive: subdirectories hold upload sources)."""
    cache = cache if cache is not None else LoadCache()
    try:
        entries = sorted(os.scandir(specs_dir), key=lambda e: e.name)
    except FileNotFoundError:
        error = SpecError(display_path(specs_dir), message="specs directory does not exist")
        return Desired(specs={}, errors=(error,), complete=False)
    except OSError as exc:
        error = SpecError(display_path(specs_dir), message=f"cannot read specs directory: {exc.strerror}")
        return Desired(specs={}, errors=(error,), complete=False)

    results: dict[str, tuple[Path, _FileResult]] = {}
    for entry in entries:
        if not is_spec_file(entry.name):
            continue
        try:
            if not entry.is_file():
                continue
            st = entry.stat()
        except OSError:
            continue  # vanished between listing and stat: the next pass sees it
        path = Path(entry.path)
        key = stat_key(st)
        hit = cache.files.get(entry.path)
        if hit is None or hit.key != key:
            hit = _parse_file(path, key)
            if is_racy(st):
                cache.files.pop(entry.path, None)  # too fresh to trust: parse again next time
            else:
                cache.files[entry.path] = hit
        results[entry.name] = (path, hit)
    for stale in set(cache.files) - {str(p) for p, _ in results.values()}:
        del cache.files[stale]

    by_name: dict[str, list[str]] = {}
    for rel, (_, result) in results.items():
        if result.name:
            by_name.setdefault(result.name, []).append(rel)

    specs: dict[str, LoadedSpec] = {}
    pools: dict[str, LoadedPool] = {}
    errors: list[SpecError] = []
    protected_files: set[str] = set()
    protected_names: set[str] = set()
    for rel, (path, result) in results.items():
        file_errors = list(result.errors)
        others = [o for o in by_name.get(result.name or "", []) if o != rel]
        if others:
            line, col = result.name_pos or (None, None)
            other = display_path(path.parent / others[0])
            file_errors.append(
                SpecError(
                    display_path(path),
                    line,
                    col,
                    "metadata.name",
                    f'duplicate name "{result.name}": also used by {other}',
                )
            )
        loaded = None
        if not file_errors and isinstance(result.spec, PoolSpec):
            previous_pool = cache.loaded.get(str(path))
            pool = LoadedPool(path=path, rel=rel, spec=result.spec)
            if isinstance(previous_pool, LoadedPool) and previous_pool.spec is pool.spec:
                pool = previous_pool  # keep its memo (hashes) while the file is unchanged
            cache.loaded[str(path)] = pool
            pools[pool.name] = pool
            continue
        if not file_errors and result.spec is not None:
            loaded, upload_errors = _resolve_uploads(specs_dir, path, rel, result, cache.digests)
            file_errors.extend(upload_errors)
        if file_errors or loaded is None:
            errors.extend(file_errors)
            protected_files.add(rel)
            if result.name:
                protected_names.add(result.name)
            continue
        previous = cache.loaded.get(str(path))
        if previous is not None and previous.spec is loaded.spec and previous == loaded:
            loaded = previous  # same parsed file, same upload digests: keep its memo
        cache.loaded[str(path)] = loaded
        specs[loaded.name] = loaded
    for stale in set(cache.loaded) - {str(s.path) for s in [*specs.values(), *pools.values()]}:
        del cache.loaded[stale]
    return Desired(
        specs=specs,
        errors=tuple(sorted(errors)),
        protected_files=frozenset(protected_files),
        protected_names=frozenset(protected_names),
        pools=pools,
    )


def _resolve_uploads(
    specs_dir: Path, path: Path, rel: str, result: _FileResult, digests: DigestCache
) -> tuple[LoadedSpec | None, list[SpecError]]:
    assert result.spec is not None
    uploads: list[ResolvedUpload] = []
    errors: list[SpecError] = []
    for i, upload in enumerate(result.spec.spec.uploads):
        try:
            uploads.append(
                resolve_upload(
                    specs_dir,
                    path.parent,
                    upload.target,
                    upload.source,
                    upload.content,
                    upload.mode,
                    digests,
                )
            )
        except (UploadPathError, OSError) as exc:
            loc = ("spec", "uploads", i, "source")
            line, col = _position(result.tree, loc)
            message = str(exc) if isinstance(exc, UploadPathError) else f"cannot read: {exc}"
            errors.append(SpecError(display_path(path), line, col, f"spec.uploads[{i}].source", message))
    if errors:
        return None, errors
    return LoadedSpec(path=path, rel=rel, spec=result.spec, uploads=tuple(uploads)), []


def _parse_file(path: Path, key: StatKey) -> _FileResult:
    shown = display_path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        error = SpecError(shown, line, col, None, "not a text file (expected UTF-8 YAML)")
        return _FileResult(key, None, None, None, [error])
    except OSError as exc:
        return _FileResult(key, None, None, None, [SpecError(shown, message=f"cannot read: {exc.strerror}")])
    yaml = YAML(typ="rt")
    try:
        docs = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if "duplicate key" in problem or type(exc).__name__ == "DuplicateKeyError":
            problem = _duplicate_key_message(exc)
        return _FileResult(key, None, None, None, [SpecError(shown, line, col, None, f"invalid YAML: {problem}")])
    except YAMLError as exc:
        return _FileResult(key, None, None, None, [SpecError(shown, message=f"invalid YAML: {exc}")])
    docs = [d for d in docs if d is not None]
    if not docs:
        return _FileResult(key, None, None, None, [SpecError(shown, 1, 1, None, "empty file: expected a Sandbox spec")])
    if len(docs) > 1:
        second = getattr(docs[1], "lc", None)
        line = second.line + 1 if second is not None and second.line is not None else 1
        message = "expected one spec per file, found another YAML document here"
        return _FileResult(key, None, None, None, [SpecError(shown, line, 1, None, message)])
    tree = docs[0]
    if not isinstance(tree, CommentedMap):
        return _FileResult(
            key, None, None, None,
            [SpecError(shown, 1, 1, None, "expected a mapping with apiVersion, kind, metadata and spec")],
        )
    name, name_pos = _name_of(tree)
    # Dispatch on kind; anything but Pool is read as a Sandbox (whose error names the kinds).
    model: type[SandboxSpec | PoolSpec] = PoolSpec if tree.get("kind") == "Pool" else SandboxSpec
    try:
        spec = model.model_validate(tree)
    except ValidationError as exc:
        return _FileResult(key, None, name, name_pos, _map_errors(shown, tree, exc, model), tree)
    return _FileResult(key, spec, spec.metadata.name, name_pos, [], tree)


def _duplicate_key_message(exc: MarkedYAMLError) -> str:
    match = re.search(r'duplicate key "(.*?)"', str(exc.problem or ""))
    return f'duplicate key "{match.group(1)}"' if match else "duplicate key"


def _name_of(tree: CommentedMap) -> tuple[str | None, tuple[int, int] | None]:
    meta = tree.get("metadata")
    if isinstance(meta, CommentedMap) and isinstance(meta.get("name"), str):
        line, col = meta.lc.key("name")
        return meta["name"], (line + 1, col + 1)
    return None, None


def _position(tree: Any, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """(line, col), 1-based, of the deepest node of ``loc`` that exists in ``tree``.

    A missing field points at its parent; pydantic's union-branch tags in
    ``loc`` (``'str'``, ``'list[str]'``) are not keys and are skipped.
    """
    node = tree
    pos: tuple[int, int] | None = (0, 0)
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            # Errors point at the field's key (``memory:``), as the example does.
            pos = node.lc.key(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            pos = node.lc.item(part)
            node = node[part]
        else:
            continue
    if pos is None:
        return None, None
    return pos[0] + 1, pos[1] + 1


def _field_path(loc: tuple[Any, ...], tree: Any) -> str:
    """``('spec', 'uploads', 0, 'source')`` -> ``spec.uploads[0].source``, union tags dropped."""
    out = ""
    node = tree
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, CommentedSeq) and part < len(node) else None
            continue
        if isinstance(node, CommentedMap) and part in node:
            node = node[part]
        elif _is_union_tag(part):
            continue
        else:
            node = None
        out += ("." if out else "") + str(part)
    return out


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and any(ch in part for ch in "[]()-,") or part in {
        "str", "int", "float", "bool", "list", "dict", "none", "union",
    }


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "none_required": "nothing",
}


def _show(value: Any) -> str:
    if isinstance(value, (CommentedMap, dict)):
        return "a mapping"
    if isinstance(value, (CommentedSeq, list)):
        return "a list"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"  # as the YAML said it
    return repr(value)


def _model_fields(loc: tuple[Any, ...], root: type[BaseModel] = SandboxSpec) -> list[str]:
    """The field names a model at ``loc`` accepts, for 'did you mean'."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or isinstance(part, int) or part not in model.model_fields:
            if isinstance(part, int):
                continue
            return []
        annotation = model.model_fields[part].annotation
        model = _inner_model(annotation)
    return list(model.model_fields) if model else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found:
            return found
    return None


def _map_errors(
    shown: str, tree: CommentedMap, exc: ValidationError, root: type[BaseModel] = SandboxSpec
) -> list[SpecError]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        grouped.setdefault(_field_path(tuple(err["loc"]), tree), []).append(err)
    out = []
    for field_path, errs in grouped.items():
        if _explained_deeper(field_path, errs, grouped):
            continue
        err = errs[0]
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            line, col = _position(tree, loc)
            name = str(loc[-1])
            close = difflib.get_close_matches(name, _model_fields(loc, root), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            message = f"unknown field{hint}"
        elif kind == "missing":
            line, col = _position(tree, loc)
            message = "required field is missing"
        else:
            line, col = _position(tree, loc)
            message = _message(errs)
        out.append(SpecError(shown, line, col, field_path or None, message))
    return out


def _explained_deeper(field_path: str, errs: list[dict[str, Any]], grouped: dict[str, Any]) -> bool:
    """A union's "expected a string, got a list" is noise when the list branch
    says which item is wrong: keep only the deeper errors."""
    if not all(e["type"] in _TYPE_WORDS for e in errs):
        return False
    return any(other.startswith((field_path + "[", field_path + ".")) for other in grouped)


def _message(errs: list[dict[str, Any]]) -> str:
    err = errs[0]
    kind = err["type"]
    got = _show(err.get("input"))
    if len(errs) > 1 and all(e["type"] in _TYPE_WORDS for e in errs):
        words = sorted({_TYPE_WORDS[e["type"]] for e in errs if e["type"] != "none_required"})
        return f"expected {' or '.join(words)}, got {got}"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {got}"
    if kind == "literal_error":
        expected = str(err["ctx"]["expected"]).replace("'", '"')  # pydantic quotes with '
        return f"expected {expected}, got {got}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(err.get("ctx", {}).values()), "")
        return f"expected a number {op} {bound}, got {got}"
    if kind == "string_too_short":
        return f"expected a non-empty string, got {got}"
    if kind == "string_pattern_mismatch":
        return f"expected a value matching {err['ctx']['pattern']}, got {got}"
    # Our own validators already say what they expected and what they got.
    return str(err["msg"]).removeprefix("Value error, ")
