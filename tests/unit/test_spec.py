"""The spec model: durations, sizes, names, env, capabilities, labels, uploads, paths, schema."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler import cli
from reconciler.spec import (
    ALLOWED_EXTRA_CAPABILITIES,
    BASE_CAPABILITIES,
    Metadata,
    SandboxBody,
    SandboxSpec,
    Upload,
    check_name,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

REPO = Path(__file__).resolve().parents[2]


def body(**fields: Any) -> SandboxBody:
    return SandboxBody.model_validate({"image": "reconciler-test/busybox:latest", **fields})


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(e["msg"] for e in exc.value.errors())


# --- durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("1d2h3m4s", 93784)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert body(ttl=text).ttl == seconds


@pytest.mark.parametrize("bad", ["forever", 90, "", "0s", "1.5h", "-5m", "h", None])
def test_bad_durations(bad: Any) -> None:
    shown = f'"{bad}"' if isinstance(bad, str) else repr(bad)
    with pytest.raises(ValueError, match="expected a duration like 90s, 15m, 24h or 7d, got " + shown):
        parse_duration(bad)


def test_bad_duration_in_spec() -> None:
    with pytest.raises(ValidationError) as exc:
        body(ttl="forever")
    assert error_text(exc) == 'expected a duration like 90s, 15m, 24h or 7d, got "forever"'


def test_duration_round_trip() -> None:
    for seconds in (90, 900, 5400, 86400, 93784):
        assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(5400) == "1h30m"


# --- sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5g", 1536 * 1024**2), ("6m", 6 * 1024**2)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert body(resources={"memory": text}).resources.memory == size


def test_bad_size_words() -> None:
    with pytest.raises(ValueError, match='expected a size like 512m or 2g, got "lots"'):
        parse_size("lots")
    with pytest.raises(ValueError, match="expected a size like 512m or 2g, got 512"):
        parse_size(512)  # a bare number: bytes or megabytes? Ask for a unit.


@pytest.mark.parametrize("small", ["1k", "5m"])
def test_sizes_below_dockers_minimum(small: str) -> None:
    with pytest.raises(ValueError, match=f'expected at least 6m .*got "{small}"'):
        parse_size(small)


def test_default_resources() -> None:
    resources = body().resources
    assert (resources.memory, resources.cpus, resources.pids) == (2 * 1024**3, 2.0, 512)
    assert format_size(resources.memory) == "2g"


@pytest.mark.parametrize(("field", "value"), [("cpus", 0), ("cpus", "many"), ("cpus", True), ("pids", 3), ("pids", "x")])
def test_bad_resources(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        body(resources={field: value})


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "web", "web-1", "a1-b2", "a" * 40])
def test_good_names(good: str) -> None:
    assert check_name(good) == good
    assert Metadata(name=good).name == good


@pytest.mark.parametrize("bad", ["1web", "web-", "-web", "Web", "we_b", "we.b", "", "web b", 5])
def test_bad_names(bad: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        Metadata(name=bad)
    shown = f'"{bad}"' if isinstance(bad, str) else repr(bad)
    assert error_text(exc) == (
        "expected a name of a-z, 0-9 and '-', starting with a letter and not ending with '-', got " + shown
    )


def test_name_length_limit() -> None:
    with pytest.raises(ValidationError) as exc:
        Metadata(name="a" * 41)
    assert error_text(exc) == "expected at most 40 characters, got 41"


def test_hostname_follows_the_name_rules() -> None:
    assert body(hostname="qa-calc").hostname == "qa-calc"
    with pytest.raises(ValidationError, match='expected a hostname of .*got "QA.calc"'):
        body(hostname="QA.calc")


# --- env -----------------------------------------------------------------------------


def test_env_scalars_become_shell_strings() -> None:
    env = body(env={"PORT": 8000, "DEBUG": True, "QUIET": False, "NAME": "x"}).env
    assert env == {"PORT": "8000", "DEBUG": "true", "QUIET": "false", "NAME": "x"}


@pytest.mark.parametrize("text", ["1.10", "01234", "0x1F", "1e3", "0o17"])
def test_env_numbers_that_lose_their_spelling_must_be_quoted(tmp_path: Path, text: str) -> None:
    from reconciler.loader import load_specs

    (tmp_path / "e.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: e}\n"
        f"spec:\n  image: x\n  env:\n    V: {text}\n"
    )
    desired = load_specs(tmp_path)
    assert not desired.specs
    [error] = desired.errors
    assert error.line == 7 and error.field == "spec.env.V"
    assert "write this value in quotes" in error.message


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_env_values_must_be_scalars(value: Any) -> None:
    with pytest.raises(ValidationError):
        body(env={"X": value})


@pytest.mark.parametrize("key", ["1X", "A-B", "A B", ""])
def test_env_keys(key: str) -> None:
    with pytest.raises(ValidationError, match=f'expected variable names of letters, digits and _, got "{key}"'):
        body(env={key: "v"})


# --- capabilities -------------------------------------------------------------------


def test_allowed_capabilities_are_normalised() -> None:
    caps = body(capabilities=["sys_ptrace", "CAP_MKNOD", "MKNOD", "CHOWN"]).capabilities
    # Lower case and CAP_ accepted, duplicates merged, base capabilities need no listing.
    assert caps == ["MKNOD", "SYS_PTRACE"]


@pytest.mark.parametrize("cap", ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_MODULE", "ALL", "DAC_READ_SEARCH"])
def test_dangerous_capabilities_are_refused(cap: str) -> None:
    with pytest.raises(ValidationError) as exc:
        body(capabilities=[cap])
    assert error_text(exc).startswith(f'capability "{cap}" is not allowed; allowed: AUDIT_WRITE, MKNOD')


def test_capability_sets_do_not_overlap_with_dangerous_ones() -> None:
    dangerous = {"SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_MODULE", "SYS_RAWIO", "SYS_TIME", "BPF"}
    assert not dangerous & (set(BASE_CAPABILITIES) | ALLOWED_EXTRA_CAPABILITIES)


# --- labels ------------------------------------------------------------------------------


def test_user_labels_are_strings() -> None:
    assert Metadata(name="a", labels={"team": "qa", "tier": 2, "on": True}).labels == {
        "team": "qa",
        "tier": "2",
        "on": "true",
    }


@pytest.mark.parametrize("key", ["reconciler.managed", "reconciler.instance", "reconciler.x"])
def test_reserved_label_prefix(key: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Metadata(name="a", labels={key: "true"})
    assert error_text(exc) == f"the label prefix 'reconciler.' is reserved, got \"{key}\""


def test_bad_label_key() -> None:
    with pytest.raises(ValidationError, match="expected label keys of"):
        Metadata(name="a", labels={"bad key": "x"})


# --- uploads and container paths ----------------------------------------------------------


def test_upload_needs_exactly_one_of_source_or_content() -> None:
    assert Upload(source="site/", target="/www").source == "site/"
    assert Upload(content="hi\n", target="/www/index.html").content == "hi\n"
    for fields in ({"source": "site/", "content": "x"}, {}):
        with pytest.raises(ValidationError) as exc:
            Upload(target="/www", **fields)
        assert error_text(exc) == "expected exactly one of 'source' or 'content'"


@pytest.mark.parametrize("source", ["/etc/passwd", "C:/x", ""])
def test_upload_source_must_be_relative(source: str) -> None:
    with pytest.raises(ValidationError, match="expected a path relative to the spec file"):
        Upload(source=source, target="/x")


@pytest.mark.parametrize(("path", "normalized"), [("/www", "/www"), ("/www/", "/www"), ("/a/./b", "/a/b")])
def test_container_paths(path: str, normalized: str) -> None:
    assert Upload(content="x", target=path).target == normalized
    assert body(workdir=path).workdir == normalized


@pytest.mark.parametrize("path", ["www", "./www", "", "~/x"])
def test_container_paths_must_be_absolute(path: str) -> None:
    with pytest.raises(ValidationError, match="expected an absolute path inside the container"):
        Upload(content="x", target=path)


@pytest.mark.parametrize("path", ["/a/../etc", "/..", "/www/.."])
def test_container_paths_refuse_dotdot(path: str) -> None:
    with pytest.raises(ValidationError, match="'..' and NUL are not allowed"):
        body(volumes=[{"name": "data", "target": path}])


@pytest.mark.parametrize(("mode", "expected"), [("0755", 0o755), ("644", 0o644), (0o600, 0o600), ("0o640", 0o640)])
def test_upload_modes(mode: Any, expected: int) -> None:
    assert Upload(content="x", target="/x", mode=mode).mode == expected


def test_yaml_decimal_mode_is_refused_not_misread() -> None:
    # YAML 1.2 reads `mode: 0755` as the decimal number 755 (= 0o1363: sticky
    # bit, owner cannot read). That must be an error, never a silent file mode.
    tree = YAML(typ="rt").load("mode: 0755\n")
    with pytest.raises(ValidationError, match=r"write it quoted like '0755' or as 0o755"):
        Upload(content="x", target="/x", mode=tree["mode"])


def test_unknown_fields_are_refused_at_every_level() -> None:
    base = {"apiVersion": "reconciler/v1", "kind": "Sandbox", "metadata": {"name": "a"}, "spec": {"image": "x"}}
    for path in (("extra",), ("metadata", "extra"), ("spec", "extra")):
        data = json.loads(json.dumps(base))
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = 1
        with pytest.raises(ValidationError) as exc:
            SandboxSpec.model_validate(data)
        assert [e["type"] for e in exc.value.errors()] == ["extra_forbidden"]


# --- JSON schema ----------------------------------------------------------------------------


def schema_from_cli(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["schema", *args]) == 0
    return json.loads(out.getvalue())


def test_schema_command_prints_a_valid_json_schema() -> None:
    schema = schema_from_cli()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["additionalProperties"] is False


def test_pool_schema_accepts_the_readme_pool_and_rejects_typos() -> None:
    schema = schema_from_cli("--kind", "pool")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == "reconciler Pool spec"
    validator = jsonschema.Draft202012Validator(schema)
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "kind: Pool" in b)
    pool = YAML(typ="safe").load(block)
    assert list(validator.iter_errors(pool)) == []
    pool["spec"]["sise"] = 5
    pool["kind"] = "Sandbox"
    messages = sorted(e.message for e in validator.iter_errors(pool))
    assert len(messages) == 2, messages
    assert any("'sise' was unexpected" in m for m in messages)


def test_schema_types_durations_and_sizes_as_strings() -> None:
    schema = schema_from_cli()
    defs = schema["$defs"]
    ttl = defs["SandboxBody"]["properties"]["ttl"]
    memory = defs["Resources"]["properties"]["memory"]
    ttl_types = [branch.get("type") for branch in ttl.get("anyOf", [ttl])]
    assert "string" in ttl_types and "integer" not in ttl_types
    assert memory["type"] == "string"
    assert memory.get("default") == "2g"


def test_schema_accepts_the_example_and_rejects_typos() -> None:
    validator = jsonschema.Draft202012Validator(schema_from_cli())
    example = YAML(typ="safe").load((REPO / "examples/calculator/calculator.yaml").read_text())
    assert list(validator.iter_errors(example)) == []
    example["spec"]["prot"] = 8000
    example["spec"]["ttl"] = "forever"
    example["spec"]["resources"] = {"memory": "lots"}
    messages = sorted(e.message for e in validator.iter_errors(example))
    assert len(messages) == 3, messages
    assert any("'prot' was unexpected" in m for m in messages)


def test_schema_defaults_satisfy_their_own_schema() -> None:
    # An editor inserts these on completion: each must be a value the spec accepts.
    schema = schema_from_cli()
    checked = 0
    for model in schema["$defs"].values():
        for name, prop in model.get("properties", {}).items():
            if "default" not in prop:
                continue
            sub = {"$defs": schema["$defs"], **{k: v for k, v in prop.items() if k != "default"}}
            assert jsonschema.Draft202012Validator(sub).is_valid(prop["default"]), (name, prop)
            checked += 1
    assert checked >= 10
