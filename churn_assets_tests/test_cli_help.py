"""`churn --help` lists what people use, and each command's help ends with examples that run."""

from __future__ import annotations

import argparse
import shlex

import pytest

from churn_assets.cli import EXAMPLES, build_parser

INTERNAL = {"ensure-data", "check-port"}


def _commands() -> argparse._SubParsersAction[argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands


def test_the_listing_leaves_out_what_only_make_calls() -> None:
    listing = build_parser().format_help()
    assert not any(name in listing for name in INTERNAL)
    listed = {action.dest for action in _commands()._choices_actions}
    assert listed == set(_commands().choices) - INTERNAL
    assert set(EXAMPLES) <= listed


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_is_a_command_the_parser_takes(name: str) -> None:
    command = _commands().choices[name]
    assert command.description, name
    shown = command.format_help()
    assert "examples:" in shown
    for line in EXAMPLES[name].splitlines():
        assert f"  {line}" in shown
        words = shlex.split(line.split("&&")[-1].split(">>")[0])
        if words[0] == "make":
            continue
        words = [w for w in words if "=" not in w]  # CHURN_STATE_DIR=... churn realized
        assert words[0] == "churn", line
        args = build_parser().parse_args(words[1:])
        assert args.command == name
