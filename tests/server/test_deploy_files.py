"""The deployment files load: the compose file's server config, the Kubernetes ConfigMap's, and
the compose and manifest YAML themselves (a typo there is found here, not at deploy time)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cascade_router.server import load_server_config

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_compose_files_config_loads() -> None:
    config = load_server_config(ROOT / "deploy" / "server.yaml")
    assert sorted(config.ladders) == ["support-bot"]
    assert config.state is not None
    assert config.state.startswith("redis://")
    assert config.keys == config.decision_log


def test_compose_runs_two_replicas_behind_the_gateway_with_the_stores() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"cascade-1", "cascade-2", "gateway", "redis", "postgres", "jaeger"} <= set(services)
    for replica in ("cascade-1", "cascade-2"):
        assert services[replica]["volumes"] == ["./deploy/server.yaml:/etc/cascade/server.yaml:ro"]
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "cascade-1:8000" in nginx
    assert "cascade-2:8000" in nginx


def test_the_kubernetes_configmap_holds_a_valid_config() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    configmap = next(d for d in documents if d["kind"] == "ConfigMap")
    config = load_server_config(yaml.safe_load(configmap["data"]["server.yaml"]))
    assert sorted(config.ladders) == ["support-bot"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > config.shutdown_grace_s
    assert spec["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
