"""`finpulse registry` against a real SQLite file and the bundled artifact."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from models import DEFAULT_MODEL_DIR
from models.artifact import read_manifest, update_manifest
from finpulse.cli import main


class Run:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def finpulse(tmp_path, monkeypatch, capsys):
    """Run the CLI in this process (it is the same code path, without the start-up cost)."""
    monkeypatch.setenv("FINPULSE_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.db'}")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    yield run
    # main() installs its own log handler; hand the root logger back to pytest.
    root.handlers[:], root.level = handlers, level


def test_add_promote_list_and_rollback(tmp_path, finpulse):
    default = read_manifest(DEFAULT_MODEL_DIR)["version"]
    # A second version: the same weights under another name (checksums cover the files).
    other = tmp_path / "other"
    shutil.copytree(DEFAULT_MODEL_DIR, other)
    update_manifest(other, version="candidate-2")

    assert "no model versions registered" in finpulse("registry", "list").stdout
    added = finpulse("registry", "add", str(DEFAULT_MODEL_DIR), "--promote")
    assert added.returncode == 0, added.stderr
    assert f"promoted {default} to champion" in added.stdout
    assert finpulse("registry", "add", str(other)).returncode == 0

    listed = json.loads(finpulse("registry", "list", "--json").stdout)
    status = {v["version"]: v["status"] for v in listed}
    assert status == {default: "champion", "candidate-2": "challenger"}
    assert next(v for v in listed if v["version"] == default)["metrics"]["test_macro_f1"] > 0.5

    assert finpulse("registry", "promote", "candidate-2").returncode == 0
    rolled = finpulse("registry", "rollback")
    assert rolled.returncode == 0 and default in rolled.stdout
    status = {v["version"]: v["status"] for v in json.loads(finpulse("registry", "list", "--json").stdout)}
    assert status[default] == "champion" and status["candidate-2"] != "champion"


def test_errors_are_one_line(tmp_path, finpulse):
    for args, expected in [
        (("registry", "promote", "nope"), "ConfigError: unknown model version 'nope'"),
        (("registry", "rollback"), "ConfigError: no earlier champion"),
        (("registry", "add", str(tmp_path)), "ModelError: not a model artifact"),
    ]:
        result = finpulse(*args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith(expected)
        assert "Traceback" not in result.stderr
