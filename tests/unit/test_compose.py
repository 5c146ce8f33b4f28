"""docker-compose.yml cannot run here (no Docker): these checks keep it in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from app.cli import main
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CLUSTER_ENV = {k: v for k, _, v in (line.partition("=") for line in
                                    (REPO / "ops/compose/cluster.env").read_text().splitlines())
               if k and not k.startswith("#")}


def resolved(value: object, env: dict[str, str]) -> str:
    """Compose's interpolation of ${VAR}, ${VAR:-default} and ${VAR:?error} (an error raises, as compose refuses)."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, str(value))


def service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    return {k: resolved(v, env) for k, v in SERVICES[name]["environment"].items()}


def test_kafka_image_is_the_version_ops_kafka_pins() -> None:
    pinned = re.search(r"<kafka.version>(.+)</kafka.version>", (REPO / "ops/kafka/pom.xml").read_text())
    assert pinned is not None
    for name in ("kafka", "kafka-2", "kafka-3"):
        assert SERVICES[name]["image"] == f"apache/kafka:{pinned.group(1)}"
        env = SERVICES[name]["environment"]
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    single = service_env("kafka", {})
    assert single["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert single["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_the_cluster_profile_is_three_kraft_nodes_and_two_worker_hosts_sharing_the_token() -> None:
    env = {**CLUSTER_ENV, "MAGENTO_WEBHOOK_SECRET": "s", "MAGQB_TOKEN_KEY": "k"}
    nodes = {name: service_env(name, env) for name in ("kafka", "kafka-2", "kafka-3")}
    assert {n["KAFKA_NODE_ID"] for n in nodes.values()} == {"1", "2", "3"}
    voters = {f"{n['KAFKA_NODE_ID']}@{name}:9093" for name, n in nodes.items()}
    for n in nodes.values():  # one voter set, one cluster id, Kafka's own topics on three brokers
        assert set(n["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert n["CLUSTER_ID"] == nodes["kafka"]["CLUSTER_ID"]
        assert (n["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], n["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == ("3", "2")
    advertised = {n["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://") for n in nodes.values()}
    for name in ("ingress", "worker", "worker-b"):
        magqb = service_env(name, env)
        assert set(magqb["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == advertised
        assert magqb["MAGQB_TOKEN_KEY"] == "k"
        assert "MAGQB_REPLICATION_FACTOR" not in magqb  # the cluster's: min(3, brokers) = 3
    assert {name for name, svc in SERVICES.items() if svc.get("profiles")} == {"kafka-2", "kafka-3", "worker-b"}
    assert all(SERVICES[n]["profiles"] == ["cluster"] for n in ("kafka-2", "kafka-3", "worker-b"))
    assert SERVICES["worker-b"]["command"] == SERVICES["worker"]["command"]
    data = {name: next(v.split(":")[0] for v in SERVICES[name]["volumes"]) for name in ("worker", "worker-b")}
    assert data["worker"] != data["worker-b"]  # two hosts: state and token copy of their own
    with pytest.raises(LookupError, match="MAGQB_TOKEN_KEY"):  # without the key compose refuses the profile
        service_env("worker-b", {**CLUSTER_ENV, "MAGENTO_WEBHOOK_SECRET": "s"})
    scraped = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    worker_job = next(j for j in scraped["scrape_configs"] if j["job_name"] == "magqb-worker")
    assert worker_job["dns_sd_configs"][0]["names"] == ["worker", "worker-b"]


def test_every_service_command_is_a_magqb_command_with_valid_options() -> None:
    for name in ("sandbox", "ingress", "worker"):
        command = SERVICES[name]["command"]
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: {command} → {result.output}"


def test_services_use_only_known_settings_and_reach_each_other() -> None:
    known = {f.validation_alias for f in Settings.model_fields.values()}
    for name in ("sandbox", "ingress", "worker", "worker-b"):
        env = service_env(name, {"MAGENTO_WEBHOOK_SECRET": "s", "MAGQB_TOKEN_KEY": "k"})
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
    assert set(COMPOSE["volumes"]) == {"kafka-data", "kafka-2-data", "kafka-3-data", "sandbox-data", "worker-data",
                                       "worker-b-data", "prometheus-data", "grafana-data"}


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
