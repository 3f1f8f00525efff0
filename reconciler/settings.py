"""Global options: each a CLI flag and an environment variable, with embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .spec import check_name
from .traefik import check_domain

ENV_PREFIX = "RECONCILER_"

# flag name -> (env var, default, help)
GLOBAL_OPTIONS: dict[str, tuple[str, str, str]] = {
    "specs": ("RECONCILER_SPECS", "./specs", "directory of sandbox spec files"),
    "domain": ("RECONCILER_DOMAIN", "localhost", "sandboxes are served at <hostname>.<domain>"),
    "traefik_dir": ("RECONCILER_TRAEFIK_DIR", "./traefik/dynamic", "directory Traefik's file provider watches"),
    "instance": ("RECONCILER_INSTANCE", "default", "ownership scope: instances never touch each other"),
    "state_dir": ("RECONCILER_STATE_DIR", "./.reconciler", "where the state store and lock live"),
    "web_port": ("RECONCILER_WEB_PORT", "8080", "port of Traefik's web entrypoint, shown in URLs (0: none)"),
    "entrypoint": ("RECONCILER_ENTRYPOINT", "web", "Traefik entrypoint the routers attach to"),
    "tls_resolver": ("RECONCILER_TLS_RESOLVER", "", "Traefik certificate resolver for the routers (https URLs)"),
    "engine": ("RECONCILER_ENGINE", "docker", "container engine: docker (one machine) or swarm (DOCKER_HOST = a swarm manager)"),
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    specs: Path = Path("./specs")
    domain: str = "localhost"
    traefik_dir: Path = Path("./traefik/dynamic")
    instance: str = "default"
    state_dir: Path = Path("./.reconciler")
    web_port: int = Field(default=8080, ge=0, le=65535)
    entrypoint: str = Field(default="web", pattern=r"^[A-Za-z0-9-]+$")
    tls_resolver: str | None = None
    engine: str = Field(default="docker", pattern=r"^(docker|swarm)$")
    workers: int | None = None
    ready_timeout: float = 30.0

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value.lower().rstrip("."))

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if len(value) > 20:
            raise ValueError(f'expected at most 20 characters, got "{value}"')
        return check_name(value, "instance name")

    @field_validator("tls_resolver", mode="before")
    @classmethod
    def _resolver(cls, value: Any) -> Any:
        return value or None

    def url_for(self, hostname: str) -> str:
        """``http://<hostname>.<domain>:<port>``; the port is left out when it is the scheme's default."""
        scheme = "https" if self.tls_resolver else "http"
        default = 443 if self.tls_resolver else 80
        port = "" if self.web_port in (0, default) else f":{self.web_port}"
        return f"{scheme}://{hostname}.{self.domain}{port}"


def env_default(name: str) -> str:
    env, default, _ = GLOBAL_OPTIONS[name]
    return os.environ.get(env, default)
