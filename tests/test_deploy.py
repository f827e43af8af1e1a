"""docker-compose.yml, the Dockerfile and .env.example cannot run here (no Docker engine); check what can be.

`docker-compose config` (Debian's docker-compose) validates the file, every FINPULSE_*
variable the stack sets must be a setting finpulse accepts, the services must point at the
Kafka service's internal listener and the PostgreSQL service, every service has a health
check or is a one-shot step the others wait for, and the image must contain every package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from finpulse.cli import COMMANDS, build_parser
from finpulse.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"migrate", "kafka-topics"}



def finpulse_services() -> list[str]:
    return [name for name, svc in SERVICES.items() if "build" in svc]


def env_file_defaults() -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def test_docker_compose_config_passes(tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose; .ci/run does)")
    for extra in ([], ["--env-file", str(ROOT / ".env.example")]):
        result = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *extra, "config", "-q"],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
    # A broken file is refused, so the pass above means something.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("services:", "servics:", 1))
    result = subprocess.run([binary, "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode != 0


def test_stack_has_every_component():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert {"prometheus", "alertmanager", "grafana", "kafka-topics"} <= set(SERVICES)
    assert {"scorer", "monitor", "notifier", "api", "migrate"} <= set(finpulse_services())
    retrain = SERVICES["retrain"]
    assert "build" in retrain and retrain["command"] == ["retrain", "--every", "24h", "--json"]
    # Challengers go where every scorer can load them: the shared models volume.
    assert retrain["environment"]["FINPULSE_RETRAIN__OUTPUT_DIR"].startswith("/models/")


def test_every_long_running_service_has_a_health_check_and_one_shots_gate_the_rest():
    for name, svc in SERVICES.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", name
            continue
        assert "healthcheck" in svc, name
    for name in finpulse_services():
        if name == "migrate":
            continue
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["scorer"]["depends_on"]["kafka-topics"] == {"condition": "service_completed_successfully"}
    # Only the migrate step migrates.
    assert [n for n in finpulse_services() if SERVICES[n]["command"][:2] == ["db", "upgrade"]] == ["migrate"]


def test_scorer_scales_and_every_finpulse_service_shares_the_models_volume():
    scorer = SERVICES["scorer"]
    assert "ports" not in scorer and "container_name" not in scorer
    for name in finpulse_services():
        assert "models:/models" in SERVICES[name]["volumes"], name
    assert "models" in COMPOSE["volumes"]
    prometheus = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yaml").read_text())
    scorer_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "finpulse-scorer")
    assert scorer_job["dns_sd_configs"][0]["names"] == ["scorer"], "every replica is scraped"


def test_scrape_targets_match_the_services_metrics_ports():
    prometheus = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yaml").read_text())
    for job in prometheus["scrape_configs"]:
        name = job["job_name"].removeprefix("finpulse-")
        if name not in SERVICES or "build" not in SERVICES[name]:
            continue
        port = SERVICES[name]["environment"]["FINPULSE_METRICS__PORT"]
        if "dns_sd_configs" in job:
            assert job["dns_sd_configs"][0]["port"] == int(port), name
        else:
            assert job["static_configs"][0]["targets"] == [f"{name}:{port}"], name


def test_no_host_port_collides_with_a_local_postgresql():
    published = []
    for svc in SERVICES.values():
        for mapping in svc.get("ports", []):
            host = mapping.rsplit(":", 1)[0]
            default = re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", host)
            published.append(int(default))
    assert 5432 not in published
    assert len(published) == len(set(published))
    assert env_file_defaults()["POSTGRES_HOST_PORT"] != "5432"


def test_topic_step_uses_the_settings_names():
    topics = SERVICES["kafka-topics"]
    assert topics["environment"]["PARTITIONS"] == "${FINPULSE_KAFKA__TOPIC_PARTITIONS:-6}"
    assert topics["environment"]["REPLICATION"] == "${FINPULSE_KAFKA__TOPIC_REPLICATION_FACTOR:-1}"
    defaults = env_file_defaults()
    assert {"FINPULSE_KAFKA__TOPIC_PARTITIONS", "FINPULSE_KAFKA__TOPIC_REPLICATION_FACTOR"} <= set(defaults)
    settings = Settings.load()
    script = topics["command"][0]
    for topic in (settings.kafka.news_topic, settings.kafka.social_topic, settings.kafka.scored_topic,
                  settings.kafka.dlq_topic):
        assert topic in script


@pytest.mark.parametrize("name", finpulse_services())
def test_service_environment_is_valid_settings(name, monkeypatch):
    env = SERVICES[name]["environment"]
    for key in list(os.environ):
        if key.startswith("FINPULSE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.startswith("FINPULSE_"), key
        # Compose substitutes ${VAR:-default}; the settings see the default.
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
    settings = Settings.load()
    host, port = settings.kafka.bootstrap_servers.split(":")
    listeners = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{host}:{port}" in listeners
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    command = SERVICES[name]["command"]
    assert command[0] in set(COMMANDS)
    build_parser().parse_args(command)  # a bad argument (say, a malformed --every) exits 2


def test_grafana_is_provisioned_from_the_repository():
    grafana = SERVICES["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "./dashboards/json"
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/finpulse.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasources = (ROOT / "dashboards/provisioning/datasources/finpulse.yaml").read_text()
    for variable in re.findall(r"\$\{(\w+)\}", datasources):
        assert variable in grafana["environment"], variable
    prometheus = SERVICES["prometheus"]
    assert any(v.startswith("./dashboards/prometheus/rules.yaml:") for v in prometheus["volumes"])


def test_image_contains_every_package_and_defaults_to_cpu_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.MULTILINE))
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    wanted = {p.strip(' "*') for p in packages.split(",")}
    assert wanted <= copied
    assert 'ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"' in dockerfile
    assert "cu124" in dockerfile, "the CUDA variant is documented"
