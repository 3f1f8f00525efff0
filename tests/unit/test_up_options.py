"""The pure parts of ``reconcile up``: Traefik's static config, the restart backoff, event lines."""

from __future__ import annotations

from pathlib import Path
import pytest

from reconciler.errors import UserError
from reconciler.settings import Settings
from reconciler.status import LoopEvent
from reconciler.traefik_proc import TraefikOptions, traefik_args
from reconciler.up import (
    MAX_RESTART_DELAY,
    STABLE_AFTER,
    UpOptions,
    describe_event,
    listen_host,
    restart_delay,
    traefik_options,
)


def flags(opts: TraefikOptions) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in traefik_args(opts))


def test_defaults_are_traefik_yml():
    # tests/e2e/test_traefik_proc.py checks traefik_args(TraefikOptions(dir)) against
    # traefik/traefik.yml; up adds only plain log lines (it always logs to a file).
    opts = traefik_options(Settings(), UpOptions())
    assert traefik_args(opts) == [*traefik_args(TraefikOptions(dynamic_dir=Path("./traefik/dynamic"))),
                                  "--log.nocolor=true"]
    assert opts.web_address == "127.0.0.1:8080"
    assert opts.api_address == "127.0.0.1:8081"
    assert opts.log_file == Path(".reconciler/traefik.log")


def test_listen_moves_the_web_entrypoint_only():
    settings = Settings(web_port=80, traefik_dir=Path("/srv/dyn"), state_dir=Path("/var/lib/rc"))
    opts = traefik_options(settings, UpOptions(listen="0.0.0.0", api_port=9000))
    f = flags(opts)
    assert f["entrypoints.web.address"] == "0.0.0.0:80"
    # The API shows the whole routing table: loopback whatever --listen says.
    assert f["entrypoints.traefik.address"] == "127.0.0.1:9000"
    assert f["providers.file.directory"] == "/srv/dyn"
    assert opts.log_file == Path("/var/lib/rc/traefik.log")


def test_extra_traefik_args_are_passed_last():
    extra = ("--certificatesresolvers.le.acme.tlschallenge=true",)
    opts = traefik_options(Settings(tls_resolver="le"), UpOptions(traefik_args=extra))
    assert traefik_args(opts)[-1] == extra[0]


@pytest.mark.parametrize("listen, host", [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"),
                                          ("::", "[::]"), ("[::1]", "[::1]"), (" 10.0.0.5 ", "10.0.0.5")])
def test_listen_host(listen, host):
    assert listen_host(listen) == host


@pytest.mark.parametrize("listen", ["localhost", "0.0.0.0:80", "", "1.2.3.4.5"])
def test_listen_must_be_an_ip_address(listen):
    with pytest.raises(UserError, match="--listen: expected an IP address"):
        listen_host(listen)


@pytest.mark.parametrize("settings, options, message", [
    (Settings(web_port=0), UpOptions(), "--web-port"),
    (Settings(web_port=8080), UpOptions(api_port=8080), "--api-port: 8080 is already the web port"),
    (Settings(), UpOptions(api_port=0), "--api-port: expected a port"),
    (Settings(entrypoint="websecure"), UpOptions(), '--entrypoint: up serves sandboxes on the entrypoint "web"'),
])
def test_options_up_cannot_run_with(settings, options, message):
    with pytest.raises(UserError, match=message):
        traefik_options(settings, options)


def test_restart_backoff():
    # First crash: restart at once (routes are back as soon as Traefik is).
    delay = restart_delay(None, uptime=0.2)
    assert delay == 0
    seen = []
    for _ in range(8):
        delay = restart_delay(delay, uptime=0.2)
        seen.append(delay)
    assert seen[:3] == [0.5, 1.0, 2.0]
    assert seen[-1] == MAX_RESTART_DELAY
    # Every route is back within 5 s of any exit: the delay plus a start (up to 1.5 s here).
    assert MAX_RESTART_DELAY + 1.5 < 5
    # A run that lasted resets the backoff.
    assert restart_delay(MAX_RESTART_DELAY, uptime=STABLE_AFTER) == 0


def test_ready_event_prints_the_url():
    event = LoopEvent("ready", "calculator", "answers on /health", "http://calc.localhost:8080")
    assert describe_event(event) == "  ready  calculator  http://calc.localhost:8080"


def test_trouble_is_printed_with_its_message():
    event = LoopEvent("crashloop", "worker", "exited with code 1")
    assert describe_event(event) == "  crashloop  worker  exited with code 1"


def test_watching_says_how_to_stop():
    line = describe_event(LoopEvent("watching", None, "watching specs (instance default, resync 30s)"))
    assert line == "Watching specs (instance default, resync 30s); Ctrl-C stops Traefik and the loop, sandboxes keep running"


@pytest.mark.parametrize("kind", ["stopped", "created", "recreated"])
def test_quiet_events_print_nothing(kind):
    assert describe_event(LoopEvent(kind, "calculator", "something")) is None
