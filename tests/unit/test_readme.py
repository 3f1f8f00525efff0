"""The README and the docs say what the code does: every spec field, the commands, the diagram, the schema."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from reconciler.cli import main
from reconciler.spec import PoolSpec, SandboxSpec, json_schema

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
PRODUCTION = (REPO / "docs" / "production.md").read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def model_in(annotation: typing.Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model inside ``annotation`` (Optional, list, Annotated), and whether it is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in typing.get_args(annotation):
        model, is_list = model_in(arg)
        if model is not None:
            return model, is_list or typing.get_origin(annotation) is list
    return None, False


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """``metadata.name``, ``spec.uploads[].source``, ...: every field of the spec, nested ones included."""
    paths = []
    for name, info in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        inner, is_list = model_in(info.annotation)
        if inner is not None:
            paths.extend(field_paths(inner, path + ("[]." if is_list else ".")))
    return paths


SPEC_FIELDS = field_paths(SandboxSpec)


POOL_FIELDS = field_paths(PoolSpec)


@pytest.mark.parametrize("path", POOL_FIELDS)
def test_every_pool_field_is_in_the_warm_pools_reference(path):
    assert f"| `{path}` |" in section(README, "Warm pools"), f"README's Warm pools table has no row for `{path}`"


def test_field_walk_sees_nested_models():
    assert {"metadata.labels", "spec.uploads[].mode", "spec.resources.memory", "spec.health.path",
            "spec.volumes[].target", "spec.placement.constraints"} <= set(SPEC_FIELDS)


@pytest.mark.parametrize("path", SPEC_FIELDS)
def test_every_spec_field_is_in_the_reference(path):
    reference = section(README, "Spec reference")
    assert f"| `{path}` |" in reference, f"README's spec reference has no row for `{path}`"


def test_the_reference_lists_no_field_that_does_not_exist():
    rows = re.findall(r"^\| `([^`]+)` \|", section(README, "Spec reference"), re.M)
    assert rows and set(rows) <= set(SPEC_FIELDS), set(rows) - set(SPEC_FIELDS)


def test_the_two_commands():
    two = section(README, "Two commands")
    assert re.search(r"^make up\b", two, re.M) and re.search(r"^make test\b", two, re.M)
    makefile = (REPO / "Makefile").read_text()
    up_recipe = re.search(r"^up:\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "reconcile up" in up_recipe and "scripts/setup" in up_recipe
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_quickstart_blocks_are_marked():
    quick = section(README, "Quickstart (30 seconds)")
    marks = re.findall(r"<!-- quickstart(?:: (\w[\w-]*))? -->\n```sh\n", quick)
    assert marks[0] == "background" and "" in marks and set(marks) <= {"background", "", "after-stop"}


def mermaid_edges() -> list[tuple[str, str]]:
    block = re.search(r"```mermaid\n(.*?)```", section(README, "How it works"), re.S)
    assert block, "README's architecture section has no Mermaid diagram"
    edges = []
    for line in block.group(1).splitlines():
        # a["label"] -- text --> b["label"]: keep the node ids.
        ids = re.findall(r"(?:^|-->|---|\|)\s*([A-Za-z_]\w*)\s*(?=[\[\(\{]|\s|-|$)", line.strip())
        if "-->" in line and len(ids) >= 2:
            edges.append((ids[0], ids[-1]))
    return edges


def test_architecture_diagram():
    edges = set(mermaid_edges())
    chain = [("specs", "loader"), ("loader", "planner"), ("planner", "executor"), ("executor", "docker"),
             ("renderer", "dynamic"), ("dynamic", "traefik")]
    for edge in chain:
        assert edge in edges, f"diagram lacks {edge[0]} --> {edge[1]}; has {sorted(edges)}"


def test_sections_for_the_other_areas():
    assert "(docs/agents.md)" in section(README, "Agents")
    assert "(BENCHMARKS.md)" in section(README, "Benchmarks")
    assert "reconcile watch" in section(README, "The control loop")


# Docs other areas write; they land separately (see the README's Agents and Benchmarks sections).
OTHER_AREAS_DOCS = {"docs/agents.md", "BENCHMARKS.md"}


@pytest.mark.parametrize("doc, text", [("README.md", README), ("docs/production.md", PRODUCTION)])
def test_relative_links_resolve(doc, text):
    base = (REPO / doc).parent
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        rel = (base / target).resolve().relative_to(REPO).as_posix()
        if rel in OTHER_AREAS_DOCS:
            continue
        assert (base / target).exists(), f"{doc} links to {target}, which does not exist"


def test_committed_schema_is_reconcile_schema_output(capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    committed = (REPO / "docs" / "sandbox.schema.json").read_text(encoding="utf-8")
    assert committed == out, "docs/sandbox.schema.json is stale: run reconcile schema > docs/sandbox.schema.json"
    assert json.loads(committed) == json_schema()


def test_committed_pool_schema_is_reconcile_schema_kind_pool_output(capsys):
    assert main(["schema", "--kind", "pool"]) == 0
    committed = (REPO / "docs" / "pool.schema.json").read_text(encoding="utf-8")
    assert committed == capsys.readouterr().out, (
        "docs/pool.schema.json is stale: run reconcile schema --kind pool > docs/pool.schema.json")
    assert json.loads(committed) == json_schema("pool")


def test_schema_modeline_is_documented_and_used():
    modeline = "# yaml-language-server: $schema=../docs/sandbox.schema.json"
    assert modeline in README
    # The spec files in the repo carry it, with a path that resolves from where they are.
    for spec in [REPO / "specs" / "hello.yaml", REPO / "examples" / "calculator" / "calculator.yaml"]:
        first = spec.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), spec
        assert (spec.parent / first.split("$schema=", 1)[1]).resolve() == REPO / "docs" / "sandbox.schema.json"


@pytest.mark.parametrize("topic", [
    "host networking", "a directory, never a single file", "wildcard", "--tls-resolver", "certResolver",
    "reconcile-watch.service", "systemctl enable --now reconcile-watch",
])
def test_production_notes_cover(topic):
    assert topic.lower() in PRODUCTION.lower()


def test_systemd_unit_runs_watch():
    unit = (REPO / "deploy" / "reconcile-watch.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["ExecStart"].endswith("/reconcile watch")
    assert "docker.service" in settings["After"] and "docker.service" in settings["Requires"]
    assert settings["Restart"] == "always" and settings["KillSignal"] == "SIGTERM"
    assert "WantedBy" in settings


def test_every_command_is_in_the_commands_table():
    from reconciler.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001 - argparse has no API for it
    table = section(README, "Commands")
    for name in commands:
        assert re.search(rf"`(reconcile )?{name}\b", table), f"README's Commands section does not mention {name}"
