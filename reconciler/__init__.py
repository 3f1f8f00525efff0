"""reconciler: declarative, self-hosted sandboxes on Docker, routed by Traefik."""

__version__ = "0.1.0"
