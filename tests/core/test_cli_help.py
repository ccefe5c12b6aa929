"""The `junction` command describes itself: a version, and help for every command and option."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from app import __version__
from app.cli import build_parser, main
from app.core.logging import uvicorn_log_config


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"junction {__version__}"


def test_every_command_has_a_help_line_and_a_description() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helped = {action.dest: action.help for action in subparsers._choices_actions}
    for name, command in _commands(parser).items():
        assert helped.get(name), f"`junction {name}` has no help line"
        assert command.description, f"`junction {name} --help` has no description"


def test_every_option_of_every_command_has_help() -> None:
    for name, command in _commands(build_parser()).items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), (
                f"`junction {name} {'/'.join(action.option_strings) or action.dest}` has no help"
            )


def test_help_renders_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for name in _commands(build_parser()):
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0
        assert f"usage: junction {name}" in capsys.readouterr().out


@pytest.fixture
def uvicorn_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate


def test_uvicorn_lines_are_json_outside_dev(
    uvicorn_loggers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.config.dictConfig(uvicorn_log_config("INFO", json_logs=True))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["logger"] == "uvicorn.error"
    assert record["level"] == "info"
    assert record["message"] == "Started server process [42]"


def test_uvicorn_lines_are_text_in_dev(
    uvicorn_loggers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.config.dictConfig(uvicorn_log_config("INFO", json_logs=False))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("INFO    uvicorn.error [None] Started server process [42]")
