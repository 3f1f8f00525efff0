"""The loader: every bad input of issue 2 is one exact ``file:line:col: field: message``,
the other specs still load, ignored files are ignored, invalid files protect their
sandboxes, and the cache re-parses only what changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.loader import Desired, LoadCache, is_spec_file, load_specs

HEADER = "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata:\n"


def spec_text(name: str, body: str = "  image: reconciler-test/busybox:latest\n", meta: str = "") -> str:
    """A spec whose ``spec:`` block is ``body``; ``spec:`` is on line 5 (+ lines of ``meta``)."""
    return f"{HEADER}  name: {name}\n{meta}spec:\n{body}"


@pytest.fixture
def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty specs dir; the cwd is its parent, so errors say ``specs/<file>``."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "specs"
    path.mkdir()
    return path


def write(specs: Path, name: str, text: str | bytes) -> Path:
    path = specs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def lines(desired: Desired) -> list[str]:
    return [str(e) for e in desired.errors]


def load_one_bad(specs: Path, name: str, text: str | bytes) -> list[str]:
    """Load ``text`` as ``name`` next to a good spec; the good one must still load."""
    write(specs, "good.yaml", spec_text("good"))
    write(specs, name, text)
    desired = load_specs(specs)
    assert sorted(desired.specs) == ["good"], lines(desired)
    assert name in desired.protected_files
    return lines(desired)


# --- the issue's example, exactly ------------------------------------------------------


def test_issue_example_bad_size_at_line_12_col_5(specs: Path) -> None:
    text = (
        "apiVersion: reconciler/v1\n"  # 1
        "kind: Sandbox\n"  # 2
        "metadata:\n"  # 3
        "  name: calc\n"  # 4
        "  labels: {team: qa}\n"  # 5
        "spec:\n"  # 6
        "  image: reconciler-test/busybox:latest\n"  # 7
        '  command: ["httpd", "-f", "-p", "8000", "-h", "/www"]\n'  # 8
        "  port: 8000\n"  # 9
        "  ttl: 24h\n"  # 10
        "  resources:\n"  # 11
        "    memory: lots\n"  # 12: "memory" starts in column 5
        "    cpus: 2\n"
    )
    assert text.splitlines()[11].index("memory") + 1 == 5
    assert load_one_bad(specs, "calc.yaml", text) == [
        'specs/calc.yaml:12:5: spec.resources.memory: expected a size like 512m or 2g, got "lots"'
    ]


# --- field errors: (spec text, the exact lines) ------------------------------------------------

FIELD_ERRORS: dict[str, tuple[str, list[str]]] = {
    "unknown field, did you mean": (
        spec_text("a", "  image: x\n  prot: 8000\n  zzz: 1\n"),
        ['specs/a.yaml:7:3: spec.prot: unknown field (did you mean "port"?)',
         "specs/a.yaml:8:3: spec.zzz: unknown field"],
    ),
    "unknown top-level field and the missing one": (
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetdata:\n  name: a\nspec:\n  image: x\n",
        ["specs/a.yaml:1:1: metadata: required field is missing",
         'specs/a.yaml:3:1: metdata: unknown field (did you mean "metadata"?)'],
    ),
    "unknown field in a list item": (
        spec_text("a", "  image: x\n  uploads:\n    - content: hi\n      target: /x\n      mdoe: '0644'\n"),
        ['specs/a.yaml:10:7: spec.uploads[0].mdoe: unknown field (did you mean "mode"?)'],
    ),
    "wrong types": (
        spec_text("a", "  image: x\n  port: eighty\n  env: [A, B]\n  command: 5\n  egress: maybe\n"
                       "  resources: {cpus: many}\n"),
        ['specs/a.yaml:7:3: spec.port: expected a whole number, got "eighty"',
         "specs/a.yaml:8:3: spec.env: expected a mapping, got a list",
         "specs/a.yaml:9:3: spec.command: expected a list or a string, got 5",
         'specs/a.yaml:10:3: spec.egress: expected true or false, got "maybe"',
         'specs/a.yaml:11:15: spec.resources.cpus: expected a number of CPUs like 0.5 or 2, got "many"'],
    ),
    "list items of the wrong type name the item": (
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: a}\nspec: {image: x, command: [ls, 1, true]}\n",
        ["specs/a.yaml:4:32: spec.command[1]: expected a string, got 1",
         "specs/a.yaml:4:35: spec.command[2]: expected a string, got true"],
    ),
    "wrong apiVersion and kind": (
        "apiVersion: reconciler/v2\nkind: Pod\nmetadata:\n  name: a\nspec:\n  image: x\n",
        ['specs/a.yaml:1:1: apiVersion: expected "reconciler/v1", got "reconciler/v2"',
         'specs/a.yaml:2:1: kind: expected "Sandbox", got "Pod"'],
    ),
    "missing field points at its parent": (
        spec_text("a", "  port: 8000\n"),
        ["specs/a.yaml:5:1: spec.image: required field is missing"],
    ),
    "bad name": (
        spec_text("Calc"),
        ["specs/a.yaml:4:3: metadata.name: expected a name of a-z, 0-9 and '-', starting with a letter"
         " and not ending with '-', got \"Calc\""],
    ),
    "name too long": (spec_text("a" * 41), ["specs/a.yaml:4:3: metadata.name: expected at most 40 characters, got 41"]),
    "bad duration": (
        spec_text("a", "  image: x\n  ttl: forever\n"),
        ['specs/a.yaml:7:3: spec.ttl: expected a duration like 90s, 15m, 24h or 7d, got "forever"'],
    ),
    "duration without unit": (
        spec_text("a", "  image: x\n  ttl: 90\n"),
        ["specs/a.yaml:7:3: spec.ttl: expected a duration like 90s, 15m, 24h or 7d, got 90"],
    ),
    "size too small": (
        spec_text("a", "  image: x\n  resources:\n    memory: 1k\n"),
        ['specs/a.yaml:8:5: spec.resources.memory: expected at least 6m (the smallest limit Docker accepts), got "1k"'],
    ),
    "reserved label and refused capability": (
        spec_text("a", "  image: x\n  capabilities: [SYS_ADMIN]\n", meta="  labels: {reconciler.managed: 'false'}\n"),
        ["specs/a.yaml:5:3: metadata.labels: the label prefix 'reconciler.' is reserved, got \"reconciler.managed\"",
         'specs/a.yaml:8:3: spec.capabilities: capability "SYS_ADMIN" is not allowed; '
         "allowed: AUDIT_WRITE, MKNOD, SETFCAP, SETPCAP, SYS_CHROOT, SYS_PTRACE"],
    ),
    "upload needs one of source or content": (
        spec_text("a", "  image: x\n  uploads:\n    - target: /x\n"),
        ["specs/a.yaml:8:7: spec.uploads[0]: expected exactly one of 'source' or 'content'"],
    ),
    "upload mode YAML reads as decimal": (
        spec_text("a", "  image: x\n  uploads:\n    - content: hi\n      target: /x\n      mode: 0755\n"),
        ["specs/a.yaml:10:7: spec.uploads[0].mode: expected a file mode; YAML reads 755 as a decimal number,"
         " write it quoted like '0755' or as 0o755"],
    ),
    "duplicate YAML keys": (
        spec_text("a", "  image: x\n  port: 80\n  port: 8080\n"),
        ['specs/a.yaml:8:3: invalid YAML: duplicate key "port"'],
    ),
    "not YAML": ("this is: not: yaml: [\n", ["specs/a.yaml:1:13: invalid YAML: mapping values are not allowed here"]),
    "empty": ("", ["specs/a.yaml:1:1: empty file: expected a Sandbox spec"]),
    "blank lines only": ("\n\n", ["specs/a.yaml:1:1: empty file: expected a Sandbox spec"]),
    "comment only": ("# just a comment\n", ["specs/a.yaml:1:1: empty file: expected a Sandbox spec"]),
    "empty document": ("---\n", ["specs/a.yaml:1:1: empty file: expected a Sandbox spec"]),
    "several documents": (
        spec_text("m1") + "---\n" + spec_text("m2"),
        ["specs/a.yaml:8:1: expected one spec per file, found another YAML document here"],
    ),
    "a list": ("- a\n- b\n", ["specs/a.yaml:1:1: expected a mapping with apiVersion, kind, metadata and spec"]),
    "a string": ("just a string\n", ["specs/a.yaml:1:1: expected a mapping with apiVersion, kind, metadata and spec"]),
    "a number": ("42\n", ["specs/a.yaml:1:1: expected a mapping with apiVersion, kind, metadata and spec"]),
}


@pytest.mark.parametrize("case", list(FIELD_ERRORS))
def test_bad_input_is_one_exact_line_per_error(specs: Path, case: str) -> None:
    text, expected = FIELD_ERRORS[case]
    assert load_one_bad(specs, "a.yaml", text) == expected


def test_tabs_for_indentation(specs: Path) -> None:
    [error] = load_one_bad(specs, "a.yaml", spec_text("a", "\timage: x\n"))
    assert error.startswith("specs/a.yaml:6:1: invalid YAML: ")


def test_binary_file(specs: Path) -> None:
    data = b"apiVersion: reconciler/v1\nkind: \xff\xfe\x00\x01garbage\n"
    assert load_one_bad(specs, "a.yaml", data) == ["specs/a.yaml:2:7: not a text file (expected UTF-8 YAML)"]


# --- upload sources -------------------------------------------------------------------------------


def upload_spec(source: str) -> str:
    return spec_text("a", f"  image: x\n  uploads:\n    - source: {source}\n      target: /www\n")


def test_absolute_source(specs: Path) -> None:
    assert load_one_bad(specs, "a.yaml", upload_spec("/etc/passwd")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: expected a path relative to the spec file, got "/etc/passwd"'
    ]


@pytest.mark.parametrize("source", ["../outside", "site/../../outside", ".."])
def test_source_escaping_with_dotdot(specs: Path, source: str) -> None:
    (specs.parent / "outside").write_text("secret\n")
    (specs / "site").mkdir()
    assert load_one_bad(specs, "a.yaml", upload_spec(source)) == [
        f'specs/a.yaml:8:7: spec.uploads[0].source: "{source}" is outside the specs directory'
    ]


def test_source_symlink_pointing_outside(specs: Path) -> None:
    (specs.parent / "secret.txt").write_text("secret\n")
    (specs / "site").mkdir()
    (specs / "site" / "key").symlink_to(specs.parent / "secret.txt")
    (specs / "link").symlink_to(specs.parent)
    assert load_one_bad(specs, "a.yaml", upload_spec("site/key")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: "site/key" leads outside the specs directory (through a symlink)'
    ]
    assert load_one_bad(specs, "a.yaml", upload_spec("link/secret.txt")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: "link/secret.txt" leads outside the specs directory (through a symlink)'
    ]


def test_directory_source_holding_a_symlink_outside(specs: Path) -> None:
    (specs.parent / "secret.txt").write_text("secret\n")
    (specs / "site").mkdir()
    (specs / "site" / "index.html").write_text("hi\n")
    (specs / "site" / "key").symlink_to(specs.parent / "secret.txt")
    assert load_one_bad(specs, "a.yaml", upload_spec("site/")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: "site/key" leads outside the specs directory (through a symlink)'
    ]


def test_missing_source(specs: Path) -> None:
    assert load_one_bad(specs, "a.yaml", upload_spec("nothere/")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: "nothere/" does not exist'
    ]


def test_source_symlink_loop_is_an_error_not_a_crash(specs: Path) -> None:
    (specs / "site").mkdir()
    (specs / "site" / "a").symlink_to("b")
    (specs / "site" / "b").symlink_to("a")
    assert load_one_bad(specs, "a.yaml", upload_spec("site")) == [
        'specs/a.yaml:8:7: spec.uploads[0].source: "site/a" is a symlink loop'
    ]


# --- whole-file errors -----------------------------------------------------------------------------


def test_duplicate_names_reported_for_both_files(specs: Path) -> None:
    write(specs, "one.yaml", spec_text("web"))
    write(specs, "two.yml", spec_text("web"))
    write(specs, "good.yaml", spec_text("good"))
    desired = load_specs(specs)
    assert lines(desired) == [
        'specs/one.yaml:4:3: metadata.name: duplicate name "web": also used by specs/two.yml',
        'specs/two.yml:4:3: metadata.name: duplicate name "web": also used by specs/one.yaml',
    ]
    assert sorted(desired.specs) == ["good"]
    assert desired.protected_files == {"one.yaml", "two.yml"}
    assert desired.protected_names == {"web"}


def test_every_bad_file_at_once_and_the_good_ones_still_load(specs: Path) -> None:
    bad = {
        "unknown.yaml": spec_text("unknown", "  image: x\n  prot: 1\n"),
        "types.yaml": spec_text("types", "  image: x\n  port: eighty\n"),
        "name.yaml": spec_text("Bad"),
        "ttl.yaml": spec_text("ttl", "  image: x\n  ttl: forever\n"),
        "size.yaml": spec_text("size", "  image: x\n  resources: {memory: lots}\n"),
        "abs.yaml": spec_text("abs", "  image: x\n  uploads: [{source: /etc, target: /x}]\n"),
        "esc.yaml": spec_text("esc", "  image: x\n  uploads: [{source: ../x, target: /x}]\n"),
        "dupkey.yaml": spec_text("dupkey", "  image: x\n  image: y\n"),
        "dup1.yaml": spec_text("dup"),
        "dup2.yaml": spec_text("dup"),
        "notyaml.yaml": "{{ not yaml\n",
        "empty.yaml": "",
        "multi.yaml": spec_text("m1") + "---\n" + spec_text("m2"),
        "list.yaml": "- a\n",
        "binary.yaml": b"\x00\xff\xfe\xfd",
    }
    for name, text in bad.items():
        write(specs, name, text)
    write(specs, "web.yaml", spec_text("web"))
    write(specs, "api.yml", spec_text("api"))
    desired = load_specs(specs)
    assert sorted(desired.specs) == ["api", "web"]
    # One line per error; every bad file has at least one, each with a line number.
    files = {str(e.path).removeprefix("specs/") for e in desired.errors}
    assert files == set(bad)
    assert all(e.line is not None for e in desired.errors), lines(desired)
    assert desired.protected_files == set(bad)
    assert desired.complete


# --- which files are specs --------------------------------------------------------------------------


IGNORED = [".hidden.yaml", "x.yaml~", ".x.yaml.swp", ".x.swp", "#x.yaml#", ".#x.yaml", "notes.txt",
           "x.yaml.bak", "x.yaml.tmp", "x.json", "README.md", "x.yaml.orig"]


@pytest.mark.parametrize("name", IGNORED)
def test_ignored_names(name: str) -> None:
    assert not is_spec_file(name)


@pytest.mark.parametrize("name", ["a.yaml", "a.yml", "my-app.v2.yaml"])
def test_spec_names(name: str) -> None:
    assert is_spec_file(name)


def test_ignored_files_and_subdirectories_are_not_read(specs: Path) -> None:
    for name in IGNORED:
        write(specs, name, "this would be: an: error: [\n")
    write(specs, "sub/inner.yaml", spec_text("inner"))  # subdirectories hold upload sources
    (specs / "dir.yaml").mkdir()
    write(specs, "web.yaml", spec_text("web"))
    desired = load_specs(specs)
    assert lines(desired) == []
    assert sorted(desired.specs) == ["web"]


def test_missing_specs_dir_is_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    desired = load_specs(tmp_path / "nope")
    assert lines(desired) == ["nope: specs directory does not exist"]
    assert desired.complete is False  # nothing may be destroyed on the strength of this


# --- protection ------------------------------------------------------------------------------------------


def test_invalid_files_protect_their_sandbox_by_file_and_name(specs: Path) -> None:
    write(specs, "web.yaml", spec_text("web", "  image: x\n  port: eighty\n"))
    write(specs, "broken.yaml", "{{\n")  # no name can be read from it: protected by file
    desired = load_specs(specs)
    assert desired.specs == {}
    assert desired.protected_files == {"web.yaml", "broken.yaml"}
    assert desired.protected_names == {"web"}


def test_upload_error_protects_too(specs: Path) -> None:
    write(specs, "web.yaml", upload_spec("../x"))
    desired = load_specs(specs)
    assert desired.protected_files == {"web.yaml"}
    assert desired.protected_names == {"a"}


def test_loaded_spec_records_its_file_relative_to_the_dir(specs: Path) -> None:
    write(specs, "web.yaml", spec_text("web"))
    loaded = load_specs(specs).specs["web"]
    assert loaded.rel == "web.yaml"
    assert loaded.path == specs / "web.yaml"


# --- the cache ---------------------------------------------------------------------------------------------


def age(path: Path, seconds: float = 3600) -> None:
    """Move the file's mtime into the past: the cache trusts files not touched just now."""
    stamp = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(stamp, stamp))


def test_cache_reparses_only_changed_files(specs: Path) -> None:
    a = write(specs, "a.yaml", spec_text("a"))
    b = write(specs, "b.yaml", spec_text("b"))
    age(a)
    age(b)
    cache = LoadCache()
    load_specs(specs, cache)
    first_a, first_b = cache.files[str(a)], cache.files[str(b)]
    load_specs(specs, cache)
    assert cache.files[str(a)] is first_a and cache.files[str(b)] is first_b  # nothing re-parsed

    write(specs, "b.yaml", spec_text("b", "  image: reconciler-test/busybox:latest\n  port: 8000\n"))
    age(b)
    desired = load_specs(specs, cache)
    assert cache.files[str(a)] is first_a
    assert cache.files[str(b)] is not first_b
    assert desired.specs["b"].spec.spec.port == 8000

    b.unlink()
    desired = load_specs(specs, cache)
    assert sorted(desired.specs) == ["a"]
    assert set(cache.files) == {str(a)}


def test_cache_sees_a_same_size_rewrite_with_the_same_mtime(specs: Path) -> None:
    # Coarse file clocks: an edit within one tick keeps mtime and size. The
    # change of ctime (and of the inode, for an atomic save) still shows it.
    a = write(specs, "a.yaml", spec_text("a", "  image: x\n  port: 8000\n"))
    age(a)
    stamp = a.stat().st_mtime_ns
    cache = LoadCache()
    assert load_specs(specs, cache).specs["a"].spec.spec.port == 8000
    tmp = write(specs, ".a.yaml.tmp", spec_text("a", "  image: x\n  port: 9000\n"))
    os.utime(tmp, ns=(stamp, stamp))
    os.replace(tmp, a)
    assert a.stat().st_mtime_ns == stamp and a.stat().st_size == len(spec_text("a", "  image: x\n  port: 8000\n"))
    assert load_specs(specs, cache).specs["a"].spec.spec.port == 9000


def test_cache_does_not_trust_a_file_written_just_now(specs: Path) -> None:
    a = write(specs, "a.yaml", spec_text("a"))
    cache = LoadCache()
    load_specs(specs, cache)
    assert str(a) not in cache.files  # parsed again next time: a second write may follow in the same tick
    age(a)
    load_specs(specs, cache)
    assert str(a) in cache.files


def test_cache_keeps_errors_of_unchanged_invalid_files(specs: Path) -> None:
    a = write(specs, "a.yaml", spec_text("a", "  image: x\n  ttl: forever\n"))
    age(a)
    cache = LoadCache()
    first = lines(load_specs(specs, cache))
    again = load_specs(specs, cache)
    assert lines(again) == first and len(first) == 1
    assert again.protected_files == {"a.yaml"}


def test_upload_digest_changes_through_the_cache(specs: Path) -> None:
    site = specs / "site"
    site.mkdir()
    page = write(specs, "site/index.html", "one\n")
    spec = write(specs, "a.yaml", upload_spec("site/"))
    age(page)
    age(spec)
    cache = LoadCache()
    before = load_specs(specs, cache).specs["a"].uploads[0].digest
    assert load_specs(specs, cache).specs["a"].uploads[0].digest == before
    write(specs, "site/index.html", "two\n")  # same size
    age(page)
    assert load_specs(specs, cache).specs["a"].uploads[0].digest != before
