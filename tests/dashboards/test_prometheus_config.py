"""The Prometheus scrape config, alerting rules (with promtool's unit tests) and Alertmanager config."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
SERVICES = ("scorer", "monitor", "notifier", "api", "retrain")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus prometheus-alertmanager; .ci/run does)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_check_rules():
    result = run(tool("promtool"), "check", "rules", str(PROM / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests_pass():
    result = run(tool("promtool"), "test", "rules", str(PROM / "rules_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_can_fail(tmp_path):
    """A wrong expectation fails promtool's run, so the passing run above means something."""
    shutil.copy(PROM / "rules.yaml", tmp_path / "rules.yaml")
    text = (PROM / "rules_test.yaml").read_text().replace("11.7k messages", "12 messages")
    (tmp_path / "rules_test.yaml").write_text(text)
    result = run(tool("promtool"), "test", "rules", str(tmp_path / "rules_test.yaml"))
    assert result.returncode != 0


def test_every_alert_has_a_unit_test_and_a_runbook():
    rules = [r for g in yaml.safe_load((PROM / "rules.yaml").read_text())["groups"] for r in g["rules"]]
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROM / "rules_test.yaml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbooks, re.MULTILINE)}
    for rule in rules:
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool test that fires it"
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("docs/runbooks.md#"), url
        assert url.split("#", 1)[1] in anchors, url
    wanted = {"FinpulseScorerDown", "FinpulseNoBatch", "FinpulseConsumerLagGrowing", "FinpulseDlqRateHigh",
              "FinpulseEndToEndLatencyHigh", "FinpulseNotifierFailing"}
    assert wanted <= {r["alert"] for r in rules}


def test_scrape_config_covers_every_service_and_passes_promtool(tmp_path):
    config = yaml.safe_load((PROM / "prometheus.yaml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {f"finpulse-{name}" for name in SERVICES} <= jobs
    # promtool resolves rule_files: point it at the repository's file.
    config["rule_files"] = [str(PROM / "rules.yaml")]
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_passes_amtool():
    result = run(tool("amtool"), "check-config", str(PROM / "alertmanager.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
