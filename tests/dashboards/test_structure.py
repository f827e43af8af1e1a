"""The dashboards' structure: generated JSON up to date, ids and uids unique, datasources resolve,
every documented metric on a panel and every panel metric real."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dashboards import build
from dashboards.common import DATASOURCES
from tests.dashboards.queries import (
    dashboards,
    exported_metrics,
    metric_names,
    panels,
    targets,
)

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "dashboards" / "provisioning"


def test_committed_json_is_what_the_code_generates(tmp_path):
    assert build.stale() == [], "run: python -m dashboards.build"
    # And the check itself notices a change.
    (tmp_path / "finpulse-market-sentiment.json").write_text("{}\n")
    assert "finpulse-market-sentiment" in build.stale(tmp_path)


def test_build_check_command(tmp_path, capsys):
    assert build.main(["--check"]) == 0


def test_uids_and_panel_ids_are_unique_and_schema_is_current():
    boards = dashboards()
    assert set(boards) == {"finpulse-market-sentiment", "finpulse-pipeline-health"}
    for uid, board in boards.items():
        assert board["uid"] == uid
        assert board["schemaVersion"] >= 36
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), uid
        assert all(isinstance(i, int) and i > 0 for i in ids)
        for panel in panels(board):
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]


def test_panels_do_not_overlap():
    for board in dashboards().values():
        cells: dict[tuple[int, int], str] = {}
        for panel in panels(board):
            pos = panel["gridPos"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def provisioned_datasources() -> dict[str, str]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "finpulse.yaml").read_text())
    return {ds["uid"]: ds["type"] for ds in config["datasources"]}


def test_every_datasource_reference_resolves_to_a_provisioned_one():
    provisioned = provisioned_datasources()
    assert provisioned == DATASOURCES
    refs = []
    for board in dashboards().values():
        for panel in panels(board):
            if panel["type"] != "row":
                refs.append(panel["datasource"])
        refs += [t["datasource"] for _, t in targets(board)]
        refs += [v["datasource"] for v in board.get("templating", {}).get("list", []) if v["type"] == "query"]
        refs += [a["datasource"] for a in board.get("annotations", {}).get("list", [])]
    assert refs
    for ref in refs:
        assert provisioned.get(ref["uid"]) == ref["type"], ref


def test_every_panel_has_a_query_in_its_datasources_language():
    for board in dashboards().values():
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), panel["title"]
            for target in panel["targets"]:
                assert target.get("expr") or target.get("rawSql"), panel["title"]


def test_dashboard_provider_points_at_the_generated_json():
    config = yaml.safe_load((PROVISIONING / "dashboards" / "finpulse.yaml").read_text())
    assert config["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert {p.stem for p in build.JSON_DIR.glob("*.json")} == set(build.BUILDERS)


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(finpulse_[a-z0-9_]+)`", text, flags=re.MULTILINE))


def pipeline_metrics() -> set[str]:
    board = dashboards()["finpulse-pipeline-health"]
    used: set[str] = set()
    for _, target in targets(board):
        used |= metric_names(target["expr"])
    return used


def test_every_documented_and_exported_metric_is_on_a_panel():
    documented = documented_metrics()
    assert len(documented) >= 12
    assert documented <= exported_metrics(), "docs/metrics.md names a metric nobody exports"
    missing = (documented | exported_metrics()) - pipeline_metrics()
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_every_metric_a_panel_or_rule_uses_exists():
    known = exported_metrics()
    unknown = pipeline_metrics() - known
    assert not unknown, f"panels name metrics nobody exports: {sorted(unknown)}"
    rules = (ROOT / "dashboards" / "prometheus" / "rules.yaml").read_text()
    unknown = metric_names(rules) - known
    assert not unknown, f"rules name metrics nobody exports: {sorted(unknown)}"


def test_delivery_statuses_in_rules_and_panels_are_the_notifiers():
    """The notifier counts attempts as delivered, retried or dead; nothing may match another word."""
    documented = re.search(r"`finpulse_notifier_deliveries_total`.*`status` \(([^)]+)\)",
                           (ROOT / "docs" / "metrics.md").read_text())
    assert documented and set(documented.group(1).split(", ")) == {"delivered", "retried", "dead"}
    rules = (ROOT / "dashboards" / "prometheus" / "rules.yaml").read_text()
    exprs = [t["expr"] for _, t in targets(dashboards()["finpulse-pipeline-health"])] + [rules]
    used = {word for expr in exprs for match in re.findall(r'status=~?"([^"]+)"', expr)
            for word in match.split("|")}
    assert used and used <= {"delivered", "retried", "dead"}, used
