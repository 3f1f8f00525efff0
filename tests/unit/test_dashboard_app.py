"""The web app in-process (Starlette's test client): routes, auth, errors, OpenAPI.

The snapshot and the writes are stand-ins that record calls: what is tested
here is the HTTP surface; the real writes run against Docker in
tests/integration/test_dashboard_server.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from reconciler.dashboard import auth, synthetic as syn
from reconciler.dashboard.actions import ActionError, ActionResult
from reconciler.dashboard.app import STATIC_DIR, Dashboard, create_app
from reconciler.dashboard.readmodel import EventView, StoreView
from reconciler.engine import EngineError
from reconciler.metrics import Metrics

TOKEN = "unit-test-token-0123456789"
LOCAL = ("127.0.0.1", 40000)
REMOTE = ("192.0.2.9", 40000)
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class FixedSnapshots:
    def __init__(self, n: int = 3, fail: bool = False) -> None:
        self.snapshot = syn.world(n)
        self.fail = fail
        self.invalidated = 0

    def get(self):
        if self.fail:
            raise EngineError("cannot list Docker objects: connection refused")
        return self.snapshot

    def invalidate(self) -> None:
        self.invalidated += 1


@dataclass
class RecordingWrites:
    calls: list[tuple] = field(default_factory=list)
    refuse: ActionError | None = None

    def _do(self, *call) -> ActionResult:
        if self.refuse is not None:
            raise self.refuse
        self.calls.append(call)
        return ActionResult(ok=True, name=call[1], action=call[0], message="done", expires_at=123.0)

    def extend(self, name, seconds):
        return self._do("extend", name, seconds)

    def recreate(self, name):
        return self._do("recreate", name)

    def delete(self, name):
        return self._do("delete", name)


class ListStore:
    def __init__(self, events):
        self._events = events

    def view(self):
        return StoreView()

    def events(self, after=0, limit=200):
        return [e for e in self._events if e.id > after][:limit]

    def last_event_id(self):
        return max((e.id for e in self._events), default=0)


@pytest.fixture
def parts():
    snapshots = FixedSnapshots()
    writes = RecordingWrites()
    events = [EventView(id=i, time=1e9 + i, sandbox="sb-0000", kind="created", message="new") for i in (1, 2, 3)]
    scrapes = []
    dash = Dashboard(snapshots=snapshots, store=ListStore(events), actions=writes,
                     metrics=Metrics(states=lambda: {"ready": 2}), token=TOKEN,
                     hosts=auth.allowed_hosts("localhost", "127.0.0.1"),
                     before_scrape=lambda: scrapes.append(1))
    return dash, snapshots, writes, scrapes


def client(dash, peer=LOCAL) -> TestClient:
    return TestClient(create_app(dash), base_url="http://127.0.0.1:8090", client=peer)


def test_page_and_assets_are_served_with_a_strict_policy(parts):
    c = client(parts[0])
    page = c.get("/")
    assert page.status_code == 200 and "<table id=\"sandboxes\">" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert c.get(asset).status_code == 200


def test_page_loads_nothing_from_elsewhere():
    # The machine may be offline: no CDN, no external font or script.
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text, path.name
        assert "cdn" not in text.lower(), path.name


def test_overview_is_open_on_loopback(parts):
    body = client(parts[0]).get("/api/overview").json()
    assert [s["name"] for s in body["sandboxes"]] == ["sb-0000", "sb-0001", "sb-0002"]
    assert body["counts"] == {"ready": 3}
    assert "Plan:" in body["plan"]["text"]


def test_reads_from_elsewhere_need_the_token(parts):
    c = client(parts[0], peer=REMOTE)
    refused = c.get("/api/overview")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert c.get("/api/overview", headers=BEARER).status_code == 200
    assert c.get("/metrics").status_code == 401


def test_unknown_host_is_refused(parts):
    c = client(parts[0])
    assert c.get("/api/overview", headers={"Host": "attacker.example"}).status_code == 400


def test_one_sandbox_and_404(parts):
    c = client(parts[0])
    assert c.get("/api/sandboxes/sb-0001").json()["name"] == "sb-0001"
    missing = c.get("/api/sandboxes/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert len(c.get("/api/sandboxes").json()) == 3


def test_events_after_an_id(parts):
    c = client(parts[0])
    assert [e["id"] for e in c.get("/api/events").json()] == [1, 2, 3]
    assert [e["id"] for e in c.get("/api/events?after=2").json()] == [3]
    assert c.get("/api/events?limit=0").status_code == 422


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong-token-wrong-token"}, 401),
    ({**BEARER, "Origin": "http://evil.example"}, 403),
    ({**BEARER, "Sec-Fetch-Site": "cross-site"}, 403),
])
def test_refused_writes_never_reach_the_actions(parts, headers, status):
    dash, _, writes, _ = parts
    c = client(dash)
    for method, path, body in [("POST", "/api/sandboxes/sb-0000/extend", {"seconds": 60}),
                               ("POST", "/api/sandboxes/sb-0000/recreate", {}),
                               ("DELETE", "/api/sandboxes/sb-0000", {})]:
        response = c.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (method, path, response.text)
    assert writes.calls == []


def test_writes_with_the_token_are_carried_out(parts):
    dash, snapshots, writes, _ = parts
    c = client(dash)
    same_origin = {**BEARER, "Origin": "http://127.0.0.1:8090", "Sec-Fetch-Site": "same-origin"}
    extended = c.post("/api/sandboxes/sb-0000/extend", json={"seconds": 3600}, headers=same_origin)
    assert extended.status_code == 200 and extended.json()["expires_at"] == 123.0
    assert c.post("/api/sandboxes/sb-0001/recreate", json={}, headers=BEARER).status_code == 200
    assert c.delete("/api/sandboxes/sb-0002", headers={"X-Reconciler-Token": TOKEN}).status_code == 200
    assert writes.calls == [("extend", "sb-0000", 3600), ("recreate", "sb-0001"), ("delete", "sb-0002")]
    assert snapshots.invalidated == 3  # the next read observes afresh


def test_extend_takes_a_positive_bounded_duration(parts):
    c = client(parts[0])
    for seconds in (0, -5, 10**9):
        assert c.post("/api/sandboxes/a/extend", json={"seconds": seconds}, headers=BEARER).status_code == 422
    assert parts[2].calls == []


def test_refused_action_keeps_its_status_and_message(parts):
    dash, _, writes, _ = parts
    writes.refuse = ActionError('sandbox "web" has no ttl in its spec', 409)
    response = client(dash).post("/api/sandboxes/web/extend", json={"seconds": 60}, headers=BEARER)
    assert response.status_code == 409 and "no ttl" in response.json()["detail"]


def test_engine_down_is_a_503_with_the_reason(parts):
    dash = parts[0]
    dash.snapshots.fail = True
    response = client(dash).get("/api/overview")
    assert response.status_code == 503 and "connection refused" in response.json()["detail"]


def test_metrics_parse_and_catch_up_first(parts):
    dash, _, _, scrapes = parts
    response = client(dash).get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["reconciler_sandboxes"].samples[0].value == 2
    assert scrapes == [1]


def test_openapi_documents_the_api(parts):
    spec = client(parts[0]).get("/api/openapi.json").json()
    paths = spec["paths"]
    assert {"/api/overview", "/api/sandboxes", "/api/sandboxes/{name}", "/api/plan", "/api/events",
            "/api/sandboxes/{name}/extend", "/api/sandboxes/{name}/recreate", "/metrics"} <= set(paths)
    assert "delete" in paths["/api/sandboxes/{name}"]
    assert "401" in paths["/api/sandboxes/{name}/extend"]["post"]["responses"]
    assert "token" in spec["info"]["description"]


def test_a_remote_browser_loads_the_shell_then_reads_with_the_token(parts):
    c = client(parts[0], peer=REMOTE)
    assert c.get("/").status_code == 200
    assert c.get("/static/dashboard.js").status_code == 200
    assert c.get("/api/overview").status_code == 401
    assert c.get("/api/overview", headers={"X-Reconciler-Token": TOKEN}).status_code == 200
