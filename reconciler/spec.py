"""The Sandbox spec: the user-facing contract, as pydantic models.

Validation messages are written for people: each says what was expected and
what was found, so the loader can print ``file:line:col: field: message``.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

API_VERSION = "reconciler/v1"

NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
NAME_MAX = 40
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

# Capabilities every sandbox keeps: enough for a root process to install
# packages, chown files and bind low ports. NET_RAW (packet spoofing), MKNOD,
# AUDIT_WRITE, SETFCAP, SETPCAP and SYS_CHROOT from Docker's default set are dropped.
BASE_CAPABILITIES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
)
# What a spec may add on top. Anything else (SYS_ADMIN, NET_ADMIN, NET_RAW, ...)
# would let a sandbox reach past its own container.
ALLOWED_EXTRA_CAPABILITIES: frozenset[str] = frozenset(
    {"AUDIT_WRITE", "MKNOD", "SETFCAP", "SETPCAP", "SYS_CHROOT", "SYS_PTRACE"}
)


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, ctx)


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


# --- durations and sizes ---------------------------------------------------


def parse_duration(value: Any) -> int:
    """``90s``, ``15m``, ``24h``, ``7d`` or combinations like ``1h30m`` -> seconds."""
    if isinstance(value, str):
        text = value.strip().lower()
        match = DURATION_RE.match(text)
        if text and match and any(match.groups()):
            d, h, m, s = (int(g or 0) for g in match.groups())
            seconds = d * 86400 + h * 3600 + m * 60 + s
            if seconds > 0:
                return seconds
    raise _fail(
        "duration",
        "expected a duration like 90s, 15m, 24h or 7d, got {got}",
        got=_show(value),
    )


def format_duration(seconds: int) -> str:
    """The shortest spelling of a duration, e.g. 5400 -> ``1h30m``."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(value: Any) -> int:
    """``512m``, ``2g``, ``1.5g``, ``64k`` -> bytes (binary units, as Docker)."""
    if isinstance(value, str):
        match = SIZE_RE.match(value.strip())
        if match:
            number, unit = match.groups()
            size = int(float(number) * _SIZE_UNITS[unit.lower()])
            if size >= 6 * 1024**2:
                return size
            raise _fail(
                "size_too_small",
                "expected at least 6m (the smallest limit Docker accepts), got {got}",
                got=_show(value),
            )
    raise _fail("size", "expected a size like 512m or 2g, got {got}", got=_show(value))


def format_size(size: int) -> str:
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$", "examples": ["90s", "15m", "24h", "7d"]}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?[kKmMgG]?[bB]?$", "examples": ["512m", "2g"]}),
]


def check_name(value: Any, what: str = "name") -> str:
    """A DNS label: a-z, 0-9 and -, starting with a letter, at most 40 characters."""
    if isinstance(value, str) and NAME_RE.match(value):
        return value
    if isinstance(value, str) and len(value) > NAME_MAX:
        raise _fail(
            "name_too_long",
            "expected at most 40 characters, got {count}",
            count=len(value),
        )
    raise _fail(
        "name",
        "expected a " + what + " of a-z, 0-9 and '-', starting with a letter"
        " and not ending with '-', got {got}",
        got=_show(value),
    )


Name = Annotated[str, BeforeValidator(check_name)]


def _check_hostname(value: Any) -> str:
    return check_name(value, "hostname")


def _scalar_to_str(value: Any) -> Any:
    """YAML turns ``PORT: 8000`` and ``DEBUG: true`` into numbers and booleans;
    environment values are strings, so spell them the way a shell would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    # Only a plain decimal integer keeps its spelling through YAML. 1.10, 01234,
    # 0x1F and 1e3 come back as 1.1, 1234, 31 and 1000.0: refuse them rather
    # than hand the sandbox a value nobody wrote.
    if type(value) is int:
        return str(value)
    if isinstance(value, (int, float)):
        raise _fail(
            "scalar_spelling",
            "write this value in quotes: YAML reads it as the number {got}, not as written",
            got=repr(value),
        )
    return value


EnvValue = Annotated[str, BeforeValidator(_scalar_to_str)]


def _check_container_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _fail(
            "container_path",
            "expected an absolute path inside the container, like /app, got {got}",
            got=_show(value),
        )
    if "\x00" in value or ".." in PurePosixPath(value).parts:
        raise _fail("container_path", "'..' and NUL are not allowed in {got}", got=_show(value))
    normalized = str(PurePosixPath(value))
    return normalized


ContainerPath = Annotated[str, BeforeValidator(_check_container_path)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


# --- spec parts ------------------------------------------------------------


class Metadata(StrictModel):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
                raise _fail(
                    "label_key",
                    "expected label keys of letters, digits, '.', '_', '-', '/'"
                    " (at most 63), got {got}",
                    got=_show(key),
                )
            if key.startswith("reconciler."):
                raise _fail(
                    "label_reserved",
                    "the label prefix 'reconciler.' is reserved, got {got}",
                    got=_show(key),
                )
            out[key] = _scalar_to_str(item)
        return out


class Upload(StrictModel):
    """A file or directory copied into the container before it starts."""

    source: str | None = None
    content: str | None = None
    target: ContainerPath
    mode: int | None = Field(default=None, description="file mode, e.g. 0o755 or '0755'")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if not value or value.startswith("/") or re.match(r"^[A-Za-z]:", value):
            raise _fail(
                "upload_source",
                "expected a path relative to the spec file, got {got}",
                got=_show(value),
            )
        if "\x00" in value:
            raise _fail("upload_source", "NUL is not allowed in a path")
        del path
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value):
            return int(value.lstrip("0o") or "0", 8)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and set(str(value)) <= set("01234567"):
            # YAML 1.2 reads `mode: 0755` as the decimal 755 (0o1363): never what was meant.
            raise _fail(
                "mode",
                "expected a file mode; YAML reads {got} as a decimal number, write it quoted like '0755' or as 0o755",
                got=_show(value),
            )
        if value is None:
            return value
        raise _fail("mode", "expected a file mode like '0644' or '0755', got {got}", got=_show(value))

    @model_validator(mode="after")
    def _one_of(self) -> "Upload":
        if (self.source is None) == (self.content is None):
            raise _fail("upload_kind", "expected exactly one of 'source' or 'content'")
        return self


class Resources(StrictModel):
    # The schema shows the default as the spelling a spec uses, not as bytes.
    memory: Size = Field(default=2 * 1024**3, json_schema_extra={"default": "2g"})
    cpus: float = Field(default=2.0, description="CPU cores, e.g. 0.5 or 2")
    pids: int = Field(default=512, description="maximum number of processes")

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _fail("cpus", "expected a number of CPUs like 0.5 or 2, got {got}", got=_show(value))
        try:
            cpus = float(value)
        except ValueError:
            raise _fail("cpus", "expected a number of CPUs like 0.5 or 2, got {got}", got=_show(value))
        if not math.isfinite(cpus) or not 0.01 <= cpus <= 256:
            raise _fail("cpus", "expected between 0.01 and 256 CPUs, got {got}", got=_show(value))
        return cpus

    @field_validator("pids", mode="before")
    @classmethod
    def _pids(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 1_000_000:
            raise _fail("pids", "expected a whole number from 16 to 1000000, got {got}", got=_show(value))
        return value


class Health(StrictModel):
    path: str = Field(description="HTTP path that answers 2xx/3xx when the app is ready")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \t\r\n{}\"'`"):
            raise _fail("health_path", "expected an HTTP path like /health, got {got}", got=_show(value))
        return value


class Volume(StrictModel):
    """A named volume, owned by the sandbox: kept across recreates, removed with it."""

    name: Name
    target: ContainerPath


# Swarm placement constraints, parsed as swarmkit's manager/constraint does:
# "==" is looked for first, then "!="; key and value must match these patterns.
_CONSTRAINT_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9\-_.]+$")
_CONSTRAINT_VALUE_RE = re.compile(r"^[A-Za-z0-9:\-_\s.*()?+\[\]\\^$|/]+$")
CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
CONSTRAINT_LABEL_PREFIXES = ("node.labels.", "engine.labels.")


def check_constraint(value: Any) -> str:
    """``<key>==<value>`` or ``<key>!=<value>`` with a key swarm matches on, e.g.
    ``node.labels.tier==gpu``; returned without the spaces around the operator."""
    if not isinstance(value, str):
        raise _fail("constraint", "expected a constraint like node.labels.tier==gpu, got {got}", got=_show(value))
    op = next((o for o in ("==", "!=") if o in value), None)
    if op is None:
        raise _fail(
            "constraint",
            "expected a constraint like node.labels.tier==gpu or node.hostname!=web1 (== or !=), got {got}",
            got=_show(value),
        )
    key, _, expected = (part.strip() for part in value.partition(op))
    known = key.lower() in CONSTRAINT_KEYS or any(
        key.lower().startswith(p) and len(key) > len(p) for p in CONSTRAINT_LABEL_PREFIXES
    )
    if not _CONSTRAINT_KEY_RE.match(key) or not known:
        raise _fail(
            "constraint_key",
            "unknown constraint key {got}: expected " + ", ".join(CONSTRAINT_KEYS)
            + ", node.labels.<label> or engine.labels.<label>",
            got=_show(key),
        )
    if not expected or not _CONSTRAINT_VALUE_RE.match(expected):
        raise _fail(
            "constraint_value",
            "expected a value of letters, digits and :-_.*()?+[]^$|/ after " + op + ", got {got}",
            got=_show(expected),
        )
    if key.lower() == "node.role" and expected.lower() not in ("manager", "worker"):
        raise _fail("constraint_value", "node.role is manager or worker, got {got}", got=_show(expected))
    return f"{key}{op}{expected}"


class Placement(StrictModel):
    """Where a sandbox may run on swarm (``--engine swarm``); the docker engine ignores it."""

    constraints: list[Annotated[str, BeforeValidator(check_constraint)]] = Field(
        default_factory=list, description="swarm placement constraints, e.g. node.labels.tier==gpu"
    )


def check_image(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", value):
        raise _fail("image", "expected an image reference like busybox:latest, got {got}", got=_show(value))
    return value


def check_env_keys(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not ENV_KEY_RE.match(key):
                raise _fail(
                    "env_key",
                    "expected variable names of letters, digits and _, got {got}",
                    got=_show(key),
                )
    return value


class SandboxBody(StrictModel):
    image: str = Field(min_length=1)
    command: list[str] | str | None = Field(
        default=None, description="exec form list, or a string run by /bin/sh -c"
    )
    workdir: ContainerPath | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    uploads: list[Upload] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    port: int | None = Field(default=None, ge=1, le=65535, description="the port Traefik routes to")
    health: Health | None = None
    ttl: Duration | None = None
    resources: Resources = Field(default_factory=Resources)
    hostname: Annotated[str, BeforeValidator(_check_hostname)] | None = None
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")
    egress: bool = Field(default=True, description="false: no outbound network at all")
    capabilities: list[str] = Field(default_factory=list, description="extra Linux capabilities")
    placement: Placement | None = None
    pool: Name | None = Field(
        default=None, description="claim a warm container from this pool (a spec of kind Pool) when one matches"
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str | None) -> list[str] | str | None:
        if value == [] or value == "":
            raise _fail("command", "expected a non-empty command")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_keys(cls, value: Any) -> Any:
        return check_env_keys(value)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        normalized = []
        for cap in value:
            name = cap.upper().removeprefix("CAP_")
            if name in BASE_CAPABILITIES:
                continue
            if name not in ALLOWED_EXTRA_CAPABILITIES:
                raise _fail(
                    "capability",
                    "capability {got} is not allowed; allowed: {allowed}",
                    got=_show(cap),
                    allowed=", ".join(sorted(ALLOWED_EXTRA_CAPABILITIES)),
                )
            normalized.append(name)
        return sorted(set(normalized))

    @model_validator(mode="after")
    def _unique_targets(self) -> "SandboxBody":
        names = [v.name for v in self.volumes]
        if len(names) != len(set(names)):
            raise _fail("volumes", "volume names must be unique")
        return self


class SandboxSpec(StrictModel):
    """One sandbox: ``apiVersion: reconciler/v1``, ``kind: Sandbox``."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Sandbox"]
    metadata: Metadata
    spec: SandboxBody

    @property
    def name(self) -> str:
        return self.metadata.name


class PoolBody(StrictModel):
    """A warm pool: ``size`` idle containers of ``image``, started before anyone asks.

    Only what is fixed when a container is created is here; a sandbox claims a
    member only when these equal its own (see ``pools.mismatch``)."""

    image: str = Field(min_length=1)
    size: int = Field(ge=0, le=256, description="idle containers kept running, ready to be claimed")
    resources: Resources = Field(default_factory=Resources)
    workdir: ContainerPath | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    egress: bool = Field(default=True, description="false: the members' networks are internal")
    max_age: Duration = Field(
        default=1800, json_schema_extra={"default": "30m"},
        description="an idle member older than this is replaced, so a claim never gets a stale container",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("env", mode="before")
    @classmethod
    def _env_keys(cls, value: Any) -> Any:
        return check_env_keys(value)


class PoolSpec(StrictModel):
    """A warm pool: ``apiVersion: reconciler/v1``, ``kind: Pool``."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Pool"]
    metadata: Metadata
    spec: PoolBody

    @property
    def name(self) -> str:
        return self.metadata.name


def json_schema(kind: Literal["sandbox", "pool"] = "sandbox") -> dict[str, Any]:
    """JSON Schema of a spec file of ``kind``, for editors (yaml-language-server)."""
    model = PoolSpec if kind == "pool" else SandboxSpec
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"reconciler {model.__name__.removesuffix('Spec')} spec"
    return schema
