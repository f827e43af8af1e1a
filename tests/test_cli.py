"""The CLI contract: subcommands listed, one-line errors, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from finpulse.cli import COMMANDS, build_parser


def finpulse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_")}
    return subprocess.run(
        [sys.executable, "-m", "finpulse", *args],
        capture_output=True, text=True, timeout=120, env={**base, **(env or {})},
    )


def test_help_lists_every_subcommand():
    result = finpulse("--help")
    assert result.returncode == 0
    for name in ("demo", "scorer", "monitor", "replay", "train", "eval", "bench", "registry", "db"):
        assert name in result.stdout
    assert len(COMMANDS) == len(set(COMMANDS))


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert subparser.format_help().strip(), name


def test_bad_argument_is_one_line_not_a_traceback():
    result = finpulse("scorer", "--reload-interval", "soon")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "invalid float value" in result.stderr


def test_unknown_command_is_one_line():
    result = finpulse("frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_user_error_prints_type_and_message(tmp_path):
    result = finpulse("scorer", env={"FINPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ConfigError: no Kafka broker configured")
    assert "Traceback" not in result.stderr


def test_invalid_setting_in_environment_names_the_field():
    result = finpulse("db", "alerts", env={"FINPULSE_SCORER__MAX_BATCH_SIZE": "-3"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("ConfigError: scorer.max_batch_size")


@pytest.mark.parametrize("args", [("demo", "--rate", "0"), ("demo", "--stream", "/nonexistent.jsonl")])
def test_demo_rejects_bad_options(args):
    result = finpulse(*args)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("ConfigError:")


def test_metrics_port_in_use_is_a_config_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = finpulse("monitor", env={
            "FINPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "FINPULSE_METRICS__PORT": str(port),
        })
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"ConfigError: cannot serve metrics on 127.0.0.1:{port}"
    )


def test_the_command_line_loads_without_the_web_framework():
    # Only `finpulse api` and the demo serve HTTP; a scorer host needs no FastAPI (the GPU
    # machine of bench/gpu_run.sh has none). Building every command's parser must not
    # import it.
    code = ("import sys; from finpulse.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
