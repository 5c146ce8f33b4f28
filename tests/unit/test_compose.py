"""docker-compose.yml cannot run here (no Docker): these checks keep it in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from app.cli import main
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_kafka_image_is_the_version_ops_kafka_pins() -> None:
    pinned = re.search(r"<kafka.version>(.+)</kafka.version>", (REPO / "ops/kafka/pom.xml").read_text())
    assert pinned is not None
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{pinned.group(1)}"
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_service_command_is_a_magqb_command_with_valid_options() -> None:
    for name in ("sandbox", "ingress", "worker"):
        command = SERVICES[name]["command"]
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: {command} → {result.output}"


def test_services_use_only_known_settings_and_reach_each_other() -> None:
    known = {f.validation_alias for f in Settings.model_fields.values()}
    for name in ("sandbox", "ingress", "worker"):
        env = SERVICES[name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["QUICKBOOKS_API_BASE_URL"] == "http://sandbox:8090"
    sandbox_port = SERVICES["sandbox"]["command"][SERVICES["sandbox"]["command"].index("--port") + 1]
    assert SERVICES["sandbox"]["ports"] == [f"127.0.0.1:{sandbox_port}:{sandbox_port}"]
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert advertised == "PLAINTEXT://kafka:9092"


def test_env_example_documents_every_required_setting() -> None:
    documented = {line.split("=", 1)[0] for line in (REPO / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    required = {f.validation_alias for f in Settings.model_fields.values() if f.is_required()}
    assert required <= documented


def test_no_default_webhook_secret_and_nothing_but_webhooks_public() -> None:
    secret = COMPOSE["x-magqb-env"]["MAGENTO_WEBHOOK_SECRET"]
    assert re.fullmatch(r"\$\{MAGENTO_WEBHOOK_SECRET:\?.+\}", secret), secret  # compose refuses to start without
    published = {name: [str(p) for p in svc.get("ports", [])] for name, svc in SERVICES.items()}
    for name, ports in published.items():
        for port in ports:
            assert name == "ingress" and port == "8080:8080" or port.startswith("127.0.0.1:"), (name, port)
    ingress = SERVICES["ingress"]["command"]
    assert "--metrics-port" in ingress and "--metrics-host" not in ingress  # metrics: a port of its own, unpublished


def test_state_lives_on_named_volumes() -> None:
    assert SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in SERVICES["kafka"]["volumes"]
    sandbox = SERVICES["sandbox"]
    db = sandbox["command"][sandbox["command"].index("--db") + 1]
    assert any(db.startswith(v.split(":")[1] + "/") for v in sandbox["volumes"])
    worker_env = SERVICES["worker"]["environment"]
    assert any(v.endswith(":" + worker_env["MAGQB_DATA_DIR"]) for v in SERVICES["worker"]["volumes"])
    assert set(COMPOSE["volumes"]) == {"kafka-data", "sandbox-data", "worker-data", "prometheus-data", "grafana-data"}


def test_prometheus_scrapes_what_the_services_serve_and_grafana_gets_the_provisioning() -> None:
    prom = SERVICES["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"])  # pinned
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", SERVICES["grafana"]["image"])
    assert "./ops/prometheus:/etc/prometheus:ro" in prom["volumes"]
    config = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] if "static_configs" in job else
               f"{job['dns_sd_configs'][0]['names'][0]}:{job['dns_sd_configs'][0]['port']}"
               for job in config["scrape_configs"]}
    ingress, worker, sandbox = (SERVICES[n]["command"] for n in ("ingress", "worker", "sandbox"))
    assert targets["magqb-ingress"] == f"ingress:{ingress[ingress.index('--metrics-port') + 1]}"
    assert targets["magqb-worker"] == f"worker:{worker[worker.index('--metrics-port') + 1]}"
    assert targets["magqb-sandbox"] == f"sandbox:{sandbox[sandbox.index('--port') + 1]}"
    assert COMPOSE["x-magqb-env"]["MAGQB_METRICS_HOST"] == "0.0.0.0"  # reachable on the compose network
    grafana = SERVICES["grafana"]["volumes"]
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    provider = yaml.safe_load((REPO / "ops/grafana/provisioning/dashboards/magqb.yml").read_text())
    mount = next(v for v in grafana if v.startswith("./ops/grafana/dashboards:"))
    assert provider["providers"][0]["options"]["path"] == mount.split(":")[1]
    datasource = yaml.safe_load((REPO / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert datasource["datasources"][0]["uid"] == "prometheus"  # the dashboard's panels name it
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["healthcheck"]["test"], name
