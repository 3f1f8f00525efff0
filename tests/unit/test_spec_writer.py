"""spec_writer: what ``reconcile new`` and ``Sandbox.create`` write loads back to the
same spec through the loader, is readable, and never overwrites anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.errors import InvalidArgument, UserError
from reconciler.loader import load_specs
from reconciler.spec_writer import NewSandbox, check, render, spec_data, spec_files_for, write_new

TRICKY_ENV = {
    "A": "1e3", "B": "true", "C": "no", "D": "0755", "E": "~", "F": "null", "G": "", "H": " spaced ",
    "I": "multi\nline", "J": "@at", "K": "*star", "L": "'q'", "M": '"dq"', "N": "%p", "O": "0x1F",
    "P": ".inf", "Q": "{{ .Env.HOME }}", "R": "a: b # c", "S": "é ✓",
}
TRICKY_CONTENT = [
    "a\nb\n", "a\nb", "a\n\n\nb\n\n", "  leading\nx\n", "trailing  \nx  \n", "tab\tin\nx\n", "\n\nstart",
    "crlf\r\nline\n", "#!/bin/sh\necho '{{x}}' \"q\"\n", "- item\n: colon\n", "a\n \n  \n", "bell\x07\n",
    "\ufeffbom\n", " \n", "",
]


def write(specs: Path, new: NewSandbox) -> Path:
    data = spec_data(new)
    check(data, specs)
    return write_new(specs, new.name, render(data))


@pytest.mark.parametrize("index", range(len(TRICKY_CONTENT)))
def test_written_specs_load_back_to_the_same_spec(tmp_path: Path, index: int) -> None:
    new = NewSandbox(
        name="rt", image="reconciler-test/busybox:latest", port=8000, ttl=5400,
        command=["sh", "-c", "echo 'a: b' # not a comment"], env=TRICKY_ENV,
        files={"/etc/app.conf": TRICKY_CONTENT[index]}, workdir="/srv", egress=False,
    )
    path = write(tmp_path, new)
    desired = load_specs(tmp_path)
    assert desired.errors == ()
    assert desired.specs["rt"].spec == check(spec_data(new), tmp_path)
    assert desired.specs["rt"].spec.spec.uploads[0].content == TRICKY_CONTENT[index]
    assert path == tmp_path / "rt.yaml"


def test_written_specs_read_the_same_in_yaml_1_1(tmp_path: Path) -> None:
    # libyaml (PyYAML's parser, YAML 1.1) must see the same values: no "no" turning
    # false, no "main:app" breaking a flow list.
    new = NewSandbox(name="rt", image="x:1", command=["python3", "-m", "uvicorn", "main:app", "--port", "8000",
                                                      "a,b", "[x]", "{y}", "#z", " pad", "no", "two\nlines", "tab\there"],
                     env={**TRICKY_ENV, "YES": "yes", "OFF": "Off", "TIME": "1:20", "Y": "y"})
    text = render(spec_data(new))
    yaml11 = YAML(typ="safe", pure=False)
    yaml11.version = (1, 1)
    assert yaml11.load(text) == spec_data(new)


def test_the_file_is_readable_yaml(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    path = write(tmp_path, NewSandbox(name="web", image="reconciler-test/busybox:latest", port=8000, ttl="2h",
                                      command=["httpd", "-f", "-p", "8000"], uploads=[("site", "/www")],
                                      files={"/www/x.txt": "one\ntwo\n"}))
    text = path.read_text()
    assert text.startswith("# Written by `reconcile new`")
    assert "  command: [httpd, -f, -p, '8000']\n" in text
    assert "  ttl: 2h\n" in text and "    - source: site\n      target: /www\n" in text
    assert "content: |\n        one\n        two\n" in text


def test_a_shell_string_command_stays_a_string(tmp_path: Path) -> None:
    write(tmp_path, NewSandbox(name="sh", image="x:1", command="echo hi && sleep 1"))
    assert load_specs(tmp_path).specs["sh"].spec.spec.command == "echo hi && sleep 1"


def test_never_overwrites_a_file(tmp_path: Path) -> None:
    (tmp_path / "calc.yaml").write_text("not even a spec")
    with pytest.raises(UserError, match="already has a spec file"):
        write(tmp_path, NewSandbox(name="calc", image="x:1"))
    assert (tmp_path / "calc.yaml").read_text() == "not even a spec"


@pytest.mark.parametrize("other", ["elsewhere.yaml", "calc.yml"])
def test_never_takes_a_name_another_file_declares(tmp_path: Path, other: str) -> None:
    # Even an invalid spec keeps its name: its running sandbox is protected by it.
    (tmp_path / other).write_text("apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: calc}\nspec: {bogus: 1}\n")
    with pytest.raises(UserError, match=other):
        write(tmp_path, NewSandbox(name="calc", image="x:1"))
    assert sorted(os.listdir(tmp_path)) == [other]
    assert spec_files_for(tmp_path, "calc") == [tmp_path / other]


def test_no_temp_file_is_left_behind(tmp_path: Path) -> None:
    write(tmp_path, NewSandbox(name="a", image="x:1"))
    with pytest.raises(UserError):
        write(tmp_path, NewSandbox(name="a", image="x:1"))
    assert sorted(os.listdir(tmp_path)) == ["a.yaml"]


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (NewSandbox(name="a", image="x:1", ttl="forever"), "spec.ttl: expected a duration"),
        (NewSandbox(name="a", image="x:1", port=70000), "spec.port"),
        (NewSandbox(name="a", image="x:1", env={"BAD-KEY": "v"}), "spec.env: expected variable names"),
        (NewSandbox(name="a", image="bad image"), "spec.image"),
        (NewSandbox(name="a", image="x:1", files={"relative": "x"}), "expected an absolute path"),
        (NewSandbox(name="a", image="x:1", uploads=[("site", "/www/../etc")]), "'..'"),
    ],
)
def test_invalid_options_are_refused_before_writing(tmp_path: Path, new: NewSandbox, message: str) -> None:
    (tmp_path / "site").mkdir()
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        check(spec_data(new), tmp_path)


def test_spec_files_for_reads_yaml_1_2_like_the_loader(tmp_path: Path) -> None:
    # A plain main:app inside [...] is fine in YAML 1.2 (the loader) and an error in 1.1.
    (tmp_path / "hand.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: hand}\n"
        "spec: {image: 'x:1', command: [uvicorn, main:app]}\n"
    )
    assert "hand" in load_specs(tmp_path).specs
    assert spec_files_for(tmp_path, "hand") == [tmp_path / "hand.yaml"]


def test_a_pool_is_written_and_loads_back(tmp_path: Path) -> None:
    write(tmp_path, NewSandbox(name="web", image="x:1", port=8000, pool="warm"))
    assert "pool: warm" in (tmp_path / "web.yaml").read_text()
    assert load_specs(tmp_path).specs["web"].spec.spec.pool == "warm"


def test_a_bad_pool_name_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"spec\.pool"):
        check(spec_data(NewSandbox(name="web", image="x:1", pool="Not A Name")), tmp_path)
    assert list(tmp_path.iterdir()) == []
