"""Global options parse the same before and after the command."""

from __future__ import annotations

from reconciler.cli import build_parser


def test_global_options_before_the_command() -> None:
    args = build_parser().parse_args(["--engine", "swarm", "--specs", "d", "-o", "json", "plan"])
    assert (args.engine, args.specs, args.output, args.command) == ("swarm", "d", "json", "plan")


def test_global_options_after_the_command() -> None:
    args = build_parser().parse_args(["plan", "--engine", "swarm", "--specs", "d", "-o", "json"])
    assert (args.engine, args.specs, args.output) == ("swarm", "d", "json")


def test_an_option_after_the_command_wins_and_unset_ones_stay_unset() -> None:
    args = build_parser().parse_args(["--domain", "a.test", "status", "--domain", "b.test"])
    assert args.domain == "b.test"
    assert args.instance is None and args.output == "text"  # filled from RECONCILER_* later
