"""The Helm chart: lint, render, Kubernetes schemas (strict), the scaling bound, least privilege.

A stage's parallelism is its input topic's partition count; the chart must never ask for
more replicas than that, by hand or through KEDA, and must say so when values try.

Least privilege (issue 14): each stage mounts only the Secrets its code uses and its
NetworkPolicy lets it reach only the services its code uses (both read from services/ below,
not restated from the chart); the ops port has a Service of its own; the ClickHouse URL and the
API tokens come from Secrets only, and the chart refuses to render without the tokens' Secret.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings
from shared.topics import TOPOLOGY, Lane, Stage, all_topics, input_topic, priority_topic

from .conftest import (
    ALL_FEATURES,
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REQUIRED,
    ROOT,
    STAGES,
    by_kind,
    manifests,
    merged,
    render,
    require_module,
)

# "minimal": the chart's defaults and the one value it requires.
VALUE_SETS = {"minimal": REQUIRED, "all-features": ALL_FEATURES}
# Custom resources: no schema in kubernetes-validate; checked field by field below.
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "TriggerAuthentication", "PrometheusRule"}  # test_monitoring.py
SECRETS_DIR = "/var/run/secrets/fiscalflow"
API_STAGES = ("ingest", "report")
PODS = (*STAGES, "create-topics")  # every pod of the release: the stages and the topics Job

# What each stage uses besides Kafka, as its code says: services/<stage>/ contains the marker
# (test_each_stage_uses_what_its_code_uses).  The chart's fiscalflow.uses must agree: it decides
# each stage's Secret mounts and NetworkPolicy egress, which the tests below check against this.
USE_MARKERS = {
    "postgres": "host.postgres()",
    "sftp": "build_pools(",
    "s3": "S3Store(",
    "clickhouse": "clickhouse_dsn()",
    "api": "host.api(",
    "callbacks": "CallbackSender(",
}
STAGE_USES: dict[str, set[str]] = {
    "ingest": {"postgres", "sftp", "s3", "api"},  # pattern jobs list the issuers' files or the S3 source bucket
    "download": {"postgres", "sftp", "s3"},  # s3: claim checks of large documents
    "validate": {"postgres", "s3"},  # s3: claim checks
    "store": {"postgres", "s3"},
    "report": {"postgres", "s3", "clickhouse", "api", "callbacks"},  # s3: rebuilds
    "create-topics": set(),
}
# The Secret behind each use (chart defaults, ALL_FEATURES' callbacks Secret), and the settings
# pointing at its files.
USE_SECRETS = {"postgres": "fiscalflow-postgres", "s3": "fiscalflow-s3", "sftp": "fiscalflow-sftp",
               "api": "fiscalflow-api", "callbacks": "fiscalflow-callbacks", "clickhouse": "fiscalflow-clickhouse"}
USE_FILES = {
    "postgres": {"PG_DSN_FILE"},
    "s3": {"S3_ACCESS_KEY_FILE", "S3_SECRET_KEY_FILE"},
    "sftp": {"SFTP_KEY", "SFTP_KNOWN_HOSTS"},
    "api": {"API_TOKEN_FILE", "READ_TOKEN_FILE"},
    "callbacks": {"CALLBACK_SECRET_FILE"},
    "clickhouse": {"CLICKHOUSE_URL_FILE"},
}
# ALL_FEATURES' Kafka security (SASL_SSL, mutual TLS, an encrypted key): every pod's.
KAFKA_FILES = {
    "KAFKA_SASL_PASSWORD_FILE": ("kafka-user", "password"),
    "KAFKA_SSL_CA_LOCATION": ("kafka-client-tls", "ca.crt"),
    "KAFKA_SSL_CERTIFICATE_LOCATION": ("kafka-client-tls", "tls.crt"),
    "KAFKA_SSL_KEY_LOCATION": ("kafka-client-tls", "tls.key"),
    "KAFKA_SSL_KEY_PASSWORD_FILE": ("kafka-client-tls", "key-password"),
}
# Settings that are secrets (never a value: a file's content), and settings that are paths of
# secret files themselves.
SECRET_SETTINGS = {"PG_DSN", "S3_ACCESS_KEY", "S3_SECRET_KEY", "API_TOKEN", "READ_TOKEN", "CALLBACK_SECRET",
                   "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD", "CLICKHOUSE_URL"}
FILE_SETTINGS = {"SFTP_KEY", "SFTP_KNOWN_HOSTS", "KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION",
                 "KAFKA_SSL_KEY_LOCATION"}


def settings_configmap(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap of settings every stage reads (the Grafana dashboard's is another)."""
    return by_kind(docs, "ConfigMap")[f"{RELEASE}-config"]


def pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod specs of the release by pod: each stage's, and the topics Job's ("create-topics")."""
    out = {name.removeprefix(f"{RELEASE}-"): d["spec"]["template"]["spec"]
           for name, d in by_kind(docs, "Deployment").items()}
    for job in by_kind(docs, "Job").values():
        out["create-topics"] = job["spec"]["template"]["spec"]
    return out


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {name.removeprefix(f"{RELEASE}-"): d["spec"]["template"]["metadata"]["labels"]
           for name, d in by_kind(docs, "Deployment").items()}
    for job in by_kind(docs, "Job").values():
        out["create-topics"] = job["spec"]["template"]["metadata"]["labels"]
    return out


def container_env(pod: dict[str, Any]) -> dict[str, str | None]:
    (container,) = pod["containers"]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mounted_files(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path -> (Secret, key) of every file of the pod's projected `secrets` volume."""
    (container,) = pod["containers"]
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] == "secrets"]
    volumes = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert len(mounts) == len(volumes) <= 1
    if not mounts:
        return {}
    return {f"{mounts[0]['mountPath']}/{item['path']}": (source["secret"]["name"], item["key"])
            for source in volumes[0]["projected"]["sources"] for item in source["secret"]["items"]}


def file_settings(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Setting (without FISCALFLOW_) -> the (Secret, key) of the mounted file it points at."""
    files = mounted_files(pod)
    return {k.removeprefix("FISCALFLOW_"): files[v] for k, v in container_env(pod).items() if v in files}


def secret_value(secret: str, key: str) -> str:
    """What the test writes in a Secret's file: distinctive, and long enough for the start check."""
    return f"{secret}.{key}.0123456789abcdef0123456789"


def pod_environment(docs: list[dict[str, Any]], pod: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The environment the pod's container starts with (its ConfigMap, then its env), its Secret
    files written under tmp_path (secret_value) and the settings pointing at them moved there."""
    configmaps = by_kind(docs, "ConfigMap")
    (container,) = pod["containers"]
    files = mounted_files(pod)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        value = entry.get("value")
        if value is None:  # fieldRef: the pod's name
            value = "pod-0"
        elif value in files:
            local = tmp_path / value.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(secret_value(*files[value]) + "\n")
            value = str(local)
        env[entry["name"]] = value
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these FISCALFLOW_* variables reads them."""
    for name in list(os.environ):
        if name.startswith("FISCALFLOW_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("FISCALFLOW_"):
            monkeypatch.setenv(name, value)
    return Settings()


def merged_stages(chart: Any, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = chart.merge_values(values)["stages"]
    return stages


# --- lint and schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints_clean_in_strict_mode(helm: Any, values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="fiscal", kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_manifest_matches_the_kubernetes_schema_strictly(chart: Any, values: dict[str, Any]) -> None:
    require_module("kubernetes_validate")
    import kubernetes_validate

    docs = manifests(render(chart, values))
    assert docs
    failures = []
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']} at {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert not failures, "\n".join(failures)


def test_values_schema_is_generated_from_its_source() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "gen_values_schema.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_values_schema_rejects_typos_and_nonsense(chart: Any, helm: Any) -> None:
    chart.validate_schema({})
    chart.validate_schema(ALL_FEATURES)
    bad_values: list[dict[str, Any]] = [
        {"stages": {"validat": {"partitions": 4}}},
        {"stages": {"validate": {"partitions": 0}}},
        {"kafka": {"bootstrapServers": ""}},
        {"sftp": {"regions": "north"}},
        # ClickHouse's URL carries credentials: a Secret's, never a value.
        {"clickhouse": {"url": "http://default:hunter2@clickhouse:8123"}},
        {"kafka": {"security": {"protocol": "TLS"}}},
        {"kafka": {"security": {"protocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI"}}}},
        {"networkPolicy": {"enable": True}},
        {"networkPolicy": {"egress": {"postgres": {"to": [], "ports": []}}}},
        {"networkPolicy": {"egress": {"kafka": {"to": [{"ipBlock": {"cidr": "10.0.0.0"}}], "ports": []}}}},
        {"networkPolicy": {"ingress": {"api": {"from": [{}]}}}},
        {"replicaCount": 3},
    ]
    for bad in bad_values:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


# --- what is rendered -----------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_one_hardened_deployment_per_stage(chart: Any, values: dict[str, Any]) -> None:
    docs = manifests(render(chart, values))
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"{RELEASE}-{s}" for s in STAGES}
    for stage in STAGES:
        pod = deployments[f"{RELEASE}-{stage}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["fiscalflow", "service", "run", stage]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert pod["topologySpreadConstraints"]
        assert container["resources"]["requests"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9100
        assert ("http" in ports) == (stage in ("ingest", "report"))
        # Each pod names itself in audit events and client ids (Settings.replica_id).
        assert {"name": "FISCALFLOW_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} \
            in container["env"]
    assert set(by_kind(docs, "PodDisruptionBudget")) == {f"{RELEASE}-{s}" for s in STAGES}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_ops_port_has_a_metrics_service_of_its_own_apart_from_the_api_services(
        chart: Any, values: dict[str, Any]) -> None:
    services = by_kind(manifests(render(chart, values)), "Service")
    api = {f"{RELEASE}-{s}" for s in API_STAGES}
    metrics = {f"{RELEASE}-{s}-metrics" for s in STAGES}
    assert set(services) == api | metrics
    for name in api:  # the API only: a LoadBalancer never exposes /metrics
        (port,) = services[name]["spec"]["ports"]
        assert (port["name"], port["targetPort"]) == ("http", "http")
        assert services[name]["metadata"]["labels"]["fiscalflow.io/service"] == "api"
    for stage in STAGES:
        svc = services[f"{RELEASE}-{stage}-metrics"]
        (port,) = svc["spec"]["ports"]
        assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 9100, "metrics")
        assert svc["spec"]["type"] == "ClusterIP" and "annotations" not in svc["metadata"]
        assert svc["metadata"]["labels"]["fiscalflow.io/service"] == "metrics"
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == stage
    if values.get("service", {}).get("type") == "LoadBalancer":
        assert {services[n]["spec"]["type"] for n in api} == {"LoadBalancer"}


def test_configmap_settings_exist_and_secrets_come_from_mounted_files(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    config = settings_configmap(docs)
    fields = {name.upper() for name in Settings.model_fields}
    for key in config["data"]:
        assert key.removeprefix("FISCALFLOW_") in fields, key
    # No secret and no path to one in the ConfigMap every stage reads: each stage's own env points
    # at the files of its own projected Secret volume, and at nothing it does not mount.
    assert not {k.removeprefix("FISCALFLOW_") for k in config["data"]} & (SECRET_SETTINGS | FILE_SETTINGS)
    for name, pod in pods(docs).items():
        env = container_env(pod)
        files = mounted_files(pod)
        pointing = {k: v for k, v in env.items() if v is not None and v.startswith(SECRETS_DIR + "/")}
        assert set(pointing.values()) == set(files), name
        for key in pointing:
            setting = key.removeprefix("FISCALFLOW_")
            assert setting in FILE_SETTINGS or (setting.endswith("_FILE") and setting[:-5] in SECRET_SETTINGS), key
    assert config["data"]["FISCALFLOW_HTTP_HOST"] == "0.0.0.0"
    assert config["data"]["FISCALFLOW_LOCAL_DIR"].startswith("/tmp/")


def test_topic_job_is_a_hook_creating_every_topic_with_the_stage_partitions(chart: Any, tmp_path: Path) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    (job,) = by_kind(docs, "Job").values()
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "--replication-factor" in container["command"] and "--increase-partitions" in container["command"]
    # The Job's environment, its Kafka Secret files written where its env points.
    env = pod_environment(docs, job["spec"]["template"]["spec"], tmp_path)
    # The Job's script, run with the Job's environment, plans exactly the pipeline's topics.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FISCALFLOW_")}
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "create_topics.py"), "--dry-run"],
                          env={**clean, **env}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    planned = {t["name"]: t["partitions"] for t in json.loads(proc.stdout)}
    stages = ALL_FEATURES["stages"]
    partitions = {Stage(s): stages.get(s, {}).get("partitions", Settings().partitions()[Stage(s)]) for s in STAGES}
    expected = {t.name: t.partitions for t in all_topics(partitions, ALL_FEATURES["topics"]["sharedPartitions"],
                                                          ALL_FEATURES["topics"]["sideLanePartitions"])}
    assert planned == expected
    assert planned["fiscal.validate"] == 12
    assert planned["fiscal.validate.priority"] == planned["fiscal.validate.retry"] == 2
    # Every topic gets the producers' message limit: the ConfigMap's, from kafka.messageMaxBytes.
    config = settings_configmap(manifests(render(chart, ALL_FEATURES)))
    producers = config["data"]["FISCALFLOW_MESSAGE_MAX_BYTES"]
    assert producers == env["FISCALFLOW_MESSAGE_MAX_BYTES"] == "1000000"
    assert {t["config"]["max.message.bytes"] for t in json.loads(proc.stdout)} == {producers}


def test_the_message_limit_is_one_value(chart: Any) -> None:
    docs = manifests(render(chart, {"kafka": {"messageMaxBytes": 2_000_000}}))
    config = settings_configmap(docs)
    (job,) = by_kind(docs, "Job").values()
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert config["data"]["FISCALFLOW_MESSAGE_MAX_BYTES"] == env["FISCALFLOW_MESSAGE_MAX_BYTES"] == "2000000"


def test_topic_job_can_be_turned_off(chart: Any) -> None:
    assert not by_kind(manifests(render(chart, {"topics": {"create": False}})), "Job")


def test_notes_tell_how_to_scale_a_stage_and_what_bounds_it(chart: Any) -> None:
    notes = render(chart)["fiscalflow/templates/NOTES.txt"]
    assert f"kubectl -n fiscal scale deploy/{RELEASE}-validate --replicas=N" in notes
    assert "bounded by the stage's partitions (4 for validate)" in notes


def test_service_monitor_scrapes_the_metrics_services_only(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {name for name, s in by_kind(docs, "Service").items()
               if selector.items() <= s["metadata"]["labels"].items()}
    assert scraped == {f"{RELEASE}-{s}-metrics" for s in STAGES}  # not the API Services
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


# --- scaling is bounded by partitions --------------------------------------------------------------


def test_default_replicas_do_not_exceed_partitions(chart: Any) -> None:
    stages = merged_stages(chart, {})
    deployments = by_kind(manifests(render(chart)), "Deployment")
    for stage in STAGES:
        replicas = deployments[f"{RELEASE}-{stage}"]["spec"]["replicas"]
        assert 1 <= replicas <= stages[stage]["partitions"], stage
        # the chart's defaults agree with the services' own defaults
        assert stages[stage]["partitions"] == Settings().partitions()[Stage(stage)]


@pytest.mark.parametrize("values", [{"keda": {"enabled": True}}, ALL_FEATURES], ids=["keda", "all-features"])
def test_keda_scales_each_stage_on_its_group_lag_within_its_partitions(chart: Any, values: dict[str, Any]) -> None:
    stages = merged_stages(chart, values)
    docs = manifests(render(chart, values))
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {f"{RELEASE}-{s}" for s in STAGES}
    deployments = by_kind(docs, "Deployment")
    for stage in STAGES:
        spec = scaled[f"{RELEASE}-{stage}"]["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert "replicas" not in deployments[spec["scaleTargetRef"]["name"]]["spec"]  # KEDA owns it
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= stages[stage]["partitions"]
        main, priority = spec["triggers"]
        assert main["type"] == "kafka"
        assert main["metadata"]["consumerGroup"] == f"fiscalflow-{stage}"
        assert main["metadata"]["topic"] == input_topic(Stage(stage))
        assert int(main["metadata"]["lagThreshold"]) >= 1
        assert priority["metadata"]["topic"] == priority_topic(Stage(stage))


def _lag_triggers(stage: Stage, priority: bool) -> set[tuple[str, str]]:
    """The (consumer group, topic) pairs a stage's KEDA triggers must watch, from the topology: its
    normal lane and, if asked for, its priority lane, each in the group that reads it
    (tests/unit/topology checks that the code consumes in exactly those groups)."""
    t = TOPOLOGY[stage]
    lanes = [Lane.NORMAL, Lane.PRIORITY] if priority else [Lane.NORMAL]
    return {(t.lane_group(lane), t.topic(lane)) for lane in lanes}


@pytest.mark.parametrize("priority", [True, False], ids=["priority-trigger", "no-priority-trigger"])
def test_keda_triggers_watch_the_lanes_and_groups_of_the_topology(chart: Any, priority: bool) -> None:
    scaled = by_kind(manifests(render(chart, {"keda": {"enabled": True, "priorityTrigger": priority}})),
                     "ScaledObject")
    for stage in Stage:
        watched = [(t["metadata"]["consumerGroup"], t["metadata"]["topic"])
                   for t in scaled[f"{RELEASE}-{stage}"]["spec"]["triggers"]]
        assert len(watched) == len(set(watched)), stage
        assert set(watched) == _lag_triggers(stage, priority), stage


def _write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("field", ["replicas", "keda.maxReplicaCount"])
def test_values_file_scaling_past_partitions_fails_to_render(
        chart: Any, helm: Any, tmp_path: Path, stage: str, field: str) -> None:
    partitions = merged_stages(chart, {})[stage]["partitions"]
    over: dict[str, Any] = ({"replicas": partitions + 1} if field == "replicas"
                            else {"keda": {"maxReplicaCount": partitions + 1}})
    values = {"keda": {"enabled": True}, "stages": {stage: over}}
    loaded = helm.values_from_yaml(_write_values(tmp_path, values).read_text())  # as `helm -f values.yaml`
    with pytest.raises(helm.HelmError) as err:
        render(chart, loaded)
    assert f"/stages/{stage}/{field.replace('.', '/')}" in str(err.value)
    assert f"want {partitions}" in str(err.value)


@pytest.mark.parametrize("field", ["replicas", "keda.maxReplicaCount"])
def test_templates_refuse_scaling_past_partitions_even_without_the_schema(
        helm: Any, tmp_path: Path, field: str) -> None:
    # `helm install --skip-schema-validation` (or a schema edited away): the templates still refuse.
    # (helm lint turns `fail` into a log line, so this renders a copy of the chart without its schema.)
    copy = tmp_path / "fiscalflow"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    over: dict[str, Any] = {"replicas": 5} if field == "replicas" else {"keda": {"maxReplicaCount": 5}}
    with helm.Chart.load(copy) as unchecked, pytest.raises(helm.HelmRenderError) as err:
        render(unchecked, {"keda": {"enabled": True}, "stages": {"validate": over}})
    assert f"stages.validate.{field} (5) exceeds stages.validate.partitions (4)" in str(err.value)


def test_more_partitions_allow_more_replicas(chart: Any) -> None:
    values = {"keda": {"enabled": True},
              "stages": {"validate": {"partitions": 16, "replicas": 16, "keda": {"maxReplicaCount": 16}}}}
    scaled = by_kind(manifests(render(chart, values)), "ScaledObject")
    assert scaled[f"{RELEASE}-validate"]["spec"]["maxReplicaCount"] == 16


# --- least privilege: what each stage uses ----------------------------------------------------------


def _uses_in_code(stage: str) -> set[str]:
    text = "\n".join(path.read_text() for path in sorted((ROOT / "services" / stage).rglob("*.py")))
    return {use for use, marker in USE_MARKERS.items() if marker in text}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_uses_what_its_code_uses(stage: str) -> None:
    # A stage that starts using S3, SFTP, ClickHouse... (or stops): update STAGE_USES and the
    # chart's fiscalflow.uses (_helpers.tpl) together, or its pods miss a Secret or a route.
    assert _uses_in_code(stage) == STAGE_USES[stage]


# --- least privilege: Secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_each_pod_mounts_only_the_secrets_its_code_uses(chart: Any, values: dict[str, Any]) -> None:
    docs = manifests(render(chart, values))
    all_pods = pods(docs)
    assert set(all_pods) == set(PODS)
    secure_kafka = values is ALL_FEATURES
    callbacks = bool(values.get("callbacks", {}).get("existingSecret"))
    for name in PODS:
        uses = STAGE_USES[name] - (set() if callbacks else {"callbacks"})
        wanted = {f for use in uses for f in USE_FILES[use]} | (set(KAFKA_FILES) if secure_kafka else set())
        mounted = file_settings(all_pods[name])
        assert set(mounted) == wanted, name
        secrets = {secret for secret, _ in mounted_files(all_pods[name]).values()}
        kafka_secrets = {secret for secret, _ in KAFKA_FILES.values()} if secure_kafka else set()
        assert secrets == {USE_SECRETS[use] for use in uses} | kafka_secrets, name
    # In plain words: the SFTP client key only where an SFTP client runs; S3 keys where S3 is read;
    # the API tokens only behind the two APIs; the topics Job gets Kafka's credentials and nothing else.
    holders = {secret: {n for n in PODS if secret in {s for s, _ in mounted_files(all_pods[n]).values()}}
               for secret in USE_SECRETS.values()}
    assert holders["fiscalflow-sftp"] == {"ingest", "download"}
    assert holders["fiscalflow-s3"] == {"ingest", "download", "validate", "store", "report"}
    assert holders["fiscalflow-api"] == {"ingest", "report"}
    assert holders["fiscalflow-clickhouse"] == {"report"}
    assert holders["fiscalflow-callbacks"] == ({"report"} if callbacks else set())
    validate = all_pods["validate"]
    assert not [p for p in mounted_files(validate) if "/sftp/" in p or "/api/" in p]
    assert "FISCALFLOW_SFTP_KEY" not in container_env(validate)


@pytest.mark.parametrize("pod", PODS)
def test_each_pod_reads_exactly_its_mounted_secrets_into_its_settings(
        chart: Any, pod: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pod's whole environment, its Secret files written where it says: Settings (the code's
    # own FISCALFLOW_<NAME>_FILE handling) reads each mounted secret, and nothing else.
    docs = manifests(render(chart, ALL_FEATURES))
    spec = pods(docs)[pod]
    settings = settings_from(pod_environment(docs, spec, tmp_path), monkeypatch)
    mounted = file_settings(spec)
    for field in ("pg_dsn", "s3_access_key", "s3_secret_key", "api_token", "read_token", "callback_secret",
                  "kafka_sasl_password", "kafka_ssl_key_password", "clickhouse_url"):
        value = getattr(settings, field).get_secret_value()
        source = mounted.get(f"{field.upper()}_FILE")
        default = Settings.model_fields[field].default.get_secret_value()
        assert value == (secret_value(*source) if source else default), field
    for field in ("sftp_key", "sftp_known_hosts", "kafka_ssl_ca_location", "kafka_ssl_certificate_location",
                  "kafka_ssl_key_location"):
        value = getattr(settings, field)
        source = mounted.get(field.upper())
        assert (Path(value).read_text().strip() if value else None) == (secret_value(*source) if source else None)
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism, settings.kafka_sasl_username) == \
        ("SASL_SSL", "SCRAM-SHA-256", "fiscalflow")
    assert settings.kafka_ssl_check_hostname is True


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_passes_its_start_check_with_only_its_own_secrets(
        chart: Any, stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `fiscalflow service run <stage>` refuses before listening (services/registry.py).
    docs = manifests(render(chart, ALL_FEATURES))
    settings = settings_from(pod_environment(docs, pods(docs)[stage], tmp_path), monkeypatch)
    assert not settings.binds_loopback()
    assert settings.exposed_secret_problems(Stage(stage)) == []
    # ... and the full check (every secret) would refuse it: the stage really lacks the others.  The
    # report and ingest mount every secret the check knows (ingest lacks only the callback secret,
    # which the check does not require: the admin token signs callbacks without it).
    assert stage in ("report", "ingest") or settings.exposed_secret_problems()


def test_kafka_security_reaches_every_kafka_client(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    config = settings_configmap(docs)
    assert {k: v for k, v in config["data"].items() if k.startswith("FISCALFLOW_KAFKA_")} == {
        "FISCALFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FISCALFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "FISCALFLOW_KAFKA_SASL_USERNAME": "fiscalflow", "FISCALFLOW_KAFKA_SSL_CHECK_HOSTNAME": "true"}
    for name, pod in pods(docs).items():
        kafka = {k: v for k, v in file_settings(pod).items() if k.startswith("KAFKA_")}
        assert kafka == KAFKA_FILES, name
    # The topics Job runs before the ConfigMap exists: the same settings inline, and a group that
    # can read the 0440 files.
    job = pods(docs)["create-topics"]
    env = container_env(job)
    assert {k: env[k] for k in config["data"] if k.startswith("FISCALFLOW_KAFKA_")} == \
        {k: v for k, v in config["data"].items() if k.startswith("FISCALFLOW_KAFKA_")}
    assert job["securityContext"]["fsGroup"] == 10001
    # Plaintext (the default): no Kafka Secret anywhere, the Job mounts nothing.
    plain = manifests(render(chart))
    config = settings_configmap(plain)
    assert {k for k in config["data"] if k.startswith("FISCALFLOW_KAFKA_")} == {"FISCALFLOW_KAFKA_SECURITY_PROTOCOL"}
    assert config["data"]["FISCALFLOW_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    for name, pod in pods(plain).items():
        assert not {k for k in file_settings(pod) if k.startswith("KAFKA_")}, name
    assert not mounted_files(pods(plain)["create-topics"])


@pytest.mark.parametrize("security, message", [
    ({"protocol": "SASL_SSL", "sasl": {"username": "fiscalflow"}},
     "kafka.security.protocol SASL_SSL needs kafka.security.sasl.username and kafka.security.sasl.existingSecret"),
    ({"protocol": "SASL_PLAINTEXT", "sasl": {"existingSecret": "kafka-user"}},
     "needs kafka.security.sasl.username"),
    ({"sasl": {"username": "fiscalflow", "existingSecret": "kafka-user"}},
     "kafka.security.sasl.existingSecret is set but kafka.security.protocol is PLAINTEXT"),
    ({"protocol": "SASL_PLAINTEXT", "sasl": {"username": "u", "existingSecret": "s"}, "tls": {"existingSecret": "t"}},
     "kafka.security.tls.existingSecret is set but kafka.security.protocol is SASL_PLAINTEXT"),
    ({"protocol": "SSL", "tls": {"existingSecret": "t", "keyKey": ""}},
     "certKey and kafka.security.tls.keyKey go together"),
], ids=["sasl-without-secret", "sasl-without-user", "sasl-secret-in-plaintext", "tls-secret-without-tls",
        "cert-without-key"])
def test_half_configured_kafka_security_fails_to_render(
        chart: Any, helm: Any, security: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as err:
        render(chart, {"kafka": {"security": security}})
    assert message in str(err.value)


def test_keda_authenticates_with_the_kafka_secrets_of_the_stages(chart: Any) -> None:
    values = {"keda": {"enabled": True}, "kafka": ALL_FEATURES["kafka"]}
    docs = manifests(render(chart, values))
    (auth,) = by_kind(docs, "TriggerAuthentication").values()
    assert auth["apiVersion"] == "keda.sh/v1alpha1" and auth["metadata"]["name"] == f"{RELEASE}-kafka"
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"password": KAFKA_FILES["KAFKA_SASL_PASSWORD_FILE"], "ca": KAFKA_FILES["KAFKA_SSL_CA_LOCATION"],
                    "cert": KAFKA_FILES["KAFKA_SSL_CERTIFICATE_LOCATION"], "key": KAFKA_FILES["KAFKA_SSL_KEY_LOCATION"],
                    "keyPassword": KAFKA_FILES["KAFKA_SSL_KEY_PASSWORD_FILE"]}
    # The user name is no secret: KEDA resolves it from the scaled container's environment (its ConfigMap).
    assert auth["spec"]["env"] == [{"parameter": "username", "name": "FISCALFLOW_KAFKA_SASL_USERNAME"}]
    config = settings_configmap(docs)
    assert config["data"]["FISCALFLOW_KAFKA_SASL_USERNAME"] == "fiscalflow"
    for deployment in by_kind(docs, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
    for name, scaled in by_kind(docs, "ScaledObject").items():
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {"name": f"{RELEASE}-kafka"}, name
            assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha256", "enable"), name
    # keda.authenticationRef: another TriggerAuthentication, the broker still spoken to as configured.
    docs = manifests(render(chart, merged(values, {"keda": {"authenticationRef": "kafka-admin"}})))
    assert not by_kind(docs, "TriggerAuthentication")
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {"name": "kafka-admin"}
            assert trigger["metadata"]["sasl"] == "scram_sha256"
    # TLS with the system's CAs and no client certificate: nothing to authenticate with.
    docs = manifests(render(chart, {"keda": {"enabled": True}, "kafka": {"security": {"protocol": "SSL"}}}))
    assert not by_kind(docs, "TriggerAuthentication")
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            assert "authenticationRef" not in trigger and "sasl" not in trigger["metadata"]
            assert trigger["metadata"]["tls"] == "enable"
    # Plaintext: as before.
    docs = manifests(render(chart, {"keda": {"enabled": True}}))
    assert not by_kind(docs, "TriggerAuthentication")
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            assert "authenticationRef" not in trigger and not {"sasl", "tls"} & set(trigger["metadata"])


# --- least privilege: ClickHouse credentials and the API tokens --------------------------------


def test_the_clickhouse_url_comes_only_from_a_secret_mounted_in_the_report(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    config = settings_configmap(docs)
    assert not [k for k in config["data"] if "CLICKHOUSE" in k]
    assert not [v for v in config["data"].values() if re.search(r"://[^/@\s]*:[^/@\s]*@", v)]  # user:password@
    for name, pod in pods(docs).items():
        assert ("CLICKHOUSE_URL_FILE" in file_settings(pod)) == (name == "report"), name
        assert not [k for k in container_env(pod) if k == "FISCALFLOW_CLICKHOUSE_URL"], name
    assert file_settings(pods(docs)["report"])["CLICKHOUSE_URL_FILE"] == ("fiscalflow-clickhouse", "url")


@pytest.mark.parametrize("values, where", [
    ({"config": {"CLICKHOUSE_URL": "http://default:hunter2@clickhouse:8123"}}, "config.CLICKHOUSE_URL"),
    ({"config": {"api_token": "0123456789abcdef0123456789"}}, "config.api_token"),
    ({"stages": {"report": {"config": {"FISCALFLOW_CALLBACK_SECRET": "x"}}}},
     "stages.report.config.FISCALFLOW_CALLBACK_SECRET"),
], ids=["clickhouse-url", "api-token", "stage-callback-secret"])
def test_a_secret_given_as_a_value_fails_to_render(chart: Any, helm: Any, values: dict[str, Any], where: str) -> None:
    # config and stages.<stage>.config land in the ConfigMap and the Deployments, readable by all.
    with pytest.raises(helm.HelmRenderError) as err:
        render(chart, values)
    assert f"{where} is a secret: never a value" in str(err.value)


def test_rendering_without_the_api_tokens_secret_fails_with_a_clear_message(
        chart: Any, helm: Any, tmp_path: Path) -> None:
    # The chart never generates the tokens: it refuses to render until their Secret is named
    # (the schema lets the empty default through so that this message is the one shown).
    wanted = "api.existingSecret is required: name the Secret holding the admin token (key api.tokenKey) " \
             "and the read token (key api.readTokenKey)"
    chart.validate_schema({})
    with pytest.raises(helm.HelmRenderError) as err:
        render(chart, {}, required=False)
    assert wanted in str(err.value)
    copy = tmp_path / "fiscalflow"
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    with helm.Chart.load(copy) as unchecked, pytest.raises(helm.HelmRenderError) as err:
        render(unchecked, {"api": {"existingSecret": ""}}, required=False)
    assert wanted in str(err.value)
    # (`helm lint` only logs a missing required value, by design: lint without values stays clean.)
    # One token under both keys would make the read token an admin token.
    with pytest.raises(helm.HelmRenderError) as err:
        render(chart, {"api": {"readTokenKey": "token"}})
    assert "the admin and read tokens must be two different tokens" in str(err.value)
    # Named: both tokens mounted in the two API stages.
    for stage in API_STAGES:
        assert {k: v for k, v in file_settings(pods(manifests(render(chart)))[stage]).items() if "TOKEN" in k} == \
            {"API_TOKEN_FILE": ("fiscalflow-api", "token"), "READ_TOKEN_FILE": ("fiscalflow-api", "read-token")}


# --- least privilege: NetworkPolicies -------------------------------------------------------------
# A small evaluator of NetworkPolicy semantics (additive; a pod no policy selects for a direction
# is open in that direction; an empty peer or port list matches any), the chart's policies as
# given to it: "can this pod reach that address", not "does the YAML look like this".

Peer = tuple[Any, ...]  # ("ip", "10.1.2.3") or ("pod", namespace, labels)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    assert set(selector) <= {"matchLabels"}, selector  # all the chart and these tests use
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _peer_matches(peers: list[dict[str, Any]] | None, peer: Peer) -> bool:
    if not peers:
        return True
    for p in peers:
        if "ipBlock" in p:
            if peer[0] == "ip":
                ip, block = ipaddress.ip_address(peer[1]), p["ipBlock"]
                if ip in ipaddress.ip_network(block["cidr"]) and \
                        not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                    return True
        elif peer[0] == "pod":
            _, namespace, labels = peer
            in_namespace = (_selects(p["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
                            if "namespaceSelector" in p else namespace == NAMESPACE)
            if in_namespace and _selects(p.get("podSelector"), labels):
                return True
    return False


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    assert all(isinstance(p["port"], int) and "endPort" not in p for p in ports), ports
    return any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def allowed(policies: list[dict[str, Any]], direction: str, labels: dict[str, str],
            peer: Peer, port: int, protocol: str = "TCP") -> bool:
    rules, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies
                 if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)]
    if not selecting:
        return True
    return any(_port_matches(r.get("ports"), port, protocol) and _peer_matches(r.get(side), peer)
               for p in selecting for r in p["spec"].get(rules) or [])


def _reachers(docs: list[dict[str, Any]], direction: str, peer: Peer, port: int, protocol: str = "TCP") -> set[str]:
    """The pods of the release that may reach (Egress) or be reached from (Ingress) peer:port."""
    policies = list(by_kind(docs, "NetworkPolicy").values())
    return {name for name, labels in pod_labels(docs).items()
            if allowed(policies, direction, labels, peer, port, protocol)}


S3_STAGES = {"ingest", "download", "validate", "store", "report"}
KUBE_DNS: Peer = ("pod", "kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS: Peer = ("pod", "monitoring", {"app.kubernetes.io/name": "prometheus"})
NEIGHBOUR: Peer = ("pod", NAMESPACE, {"app": "neighbour"})  # another workload of the release's namespace
STRANGER: Peer = ("pod", "elsewhere", {"app": "stranger"})
# (what, peer, port, protocol, the pods that may reach it) with the chart's defaults
# (otlpEndpoint set): each stage only what its code uses (STAGE_USES).
EGRESS_BY_DEFAULT = [
    ("the cluster DNS", KUBE_DNS, 53, "UDP", set(PODS)),
    ("the cluster DNS over TCP", KUBE_DNS, 53, "TCP", set(PODS)),
    ("Kafka", ("ip", "10.1.0.5"), 9092, "TCP", set(PODS)),
    ("PostgreSQL", ("ip", "10.1.0.6"), 5432, "TCP", set(STAGES)),
    ("an issuer's SFTP server", ("ip", "10.1.0.7"), 22, "TCP", {"ingest", "download"}),
    ("S3", ("ip", "52.216.8.1"), 443, "TCP", S3_STAGES),
    ("ClickHouse", ("ip", "10.1.0.8"), 8123, "TCP", {"report"}),
    # public https: callbacks (report); S3's default addresses are every public one too
    ("a callback receiver", ("ip", "203.0.113.10"), 443, "TCP", S3_STAGES),
    ("the OTLP collector", ("ip", "10.1.0.9"), 4318, "TCP", set(STAGES)),
    ("the cloud metadata service", ("ip", "169.254.169.254"), 80, "TCP", set()),
    ("the cloud metadata service over https", ("ip", "169.254.169.254"), 443, "TCP", set()),
    ("a private https host", ("ip", "10.1.0.10"), 443, "TCP", set()),
    ("a shared-range https host", ("ip", "100.64.0.1"), 443, "TCP", set()),
    ("a public DNS resolver", ("ip", "8.8.8.8"), 53, "UDP", set()),
    ("a public SSH host", ("ip", "198.51.100.7"), 22, "TCP", set()),
    ("a public PostgreSQL", ("ip", "198.51.100.8"), 5432, "TCP", set()),
    ("Kafka on another port", ("ip", "10.1.0.5"), 9093, "TCP", set()),
    ("a neighbour pod's web port", NEIGHBOUR, 8080, "TCP", set()),
]
INGRESS_BY_DEFAULT = [
    ("Prometheus to the ops port", PROMETHEUS, 9100, set(STAGES)),
    ("a neighbour to the ops port", NEIGHBOUR, 9100, set()),
    ("a neighbour to the ingest API", NEIGHBOUR, 8080, {"ingest"}),
    ("a neighbour to the report API", NEIGHBOUR, 8081, {"report"}),
    ("another namespace to the ingest API", STRANGER, 8080, set()),
    ("Prometheus to the report API", PROMETHEUS, 8081, set()),
    ("a neighbour to anything else", NEIGHBOUR, 5432, set()),
]


@pytest.mark.parametrize("what, peer, port, protocol, reachers", EGRESS_BY_DEFAULT,
                         ids=[e[0] for e in EGRESS_BY_DEFAULT])
def test_each_pod_reaches_only_what_its_code_uses(
        chart: Any, what: str, peer: Peer, port: int, protocol: str, reachers: set[str]) -> None:
    docs = manifests(render(chart, {"otlpEndpoint": "http://otel-collector.observability:4318/v1/traces"}))
    assert _reachers(docs, "Egress", peer, port, protocol) == reachers


@pytest.mark.parametrize("what, peer, port, reached", INGRESS_BY_DEFAULT, ids=[i[0] for i in INGRESS_BY_DEFAULT])
def test_each_pod_is_reached_only_on_its_own_ports(
        chart: Any, what: str, peer: Peer, port: int, reached: set[str]) -> None:
    assert _reachers(manifests(render(chart)), "Ingress", peer, port) == reached


def test_every_pod_of_the_release_is_denied_by_default(chart: Any) -> None:
    docs = manifests(render(chart))
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies[f"{RELEASE}-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    assert all(_selects(deny["podSelector"], labels) for labels in pod_labels(docs).values())
    assert set(policies) == {f"{RELEASE}-default-deny", f"{RELEASE}-create-topics", *(f"{RELEASE}-{s}" for s in STAGES)}
    # Without OTLP configured, no pod may reach a collector.
    assert _reachers(docs, "Egress", ("ip", "10.1.0.9"), 4318) == set()


def test_network_policies_follow_the_addresses_in_the_values(chart: Any) -> None:
    values = {
        "kafka": {"bootstrapServers": "b1.kafka.internal:9093, b2.kafka.internal:9094"},
        "sftp": {"regions": "north=sftp-n.example.internal:22,south=sftp-s.example.internal:2222"},
        "s3": {"endpoint": "http://minio.storage:9000"},
        "otlpEndpoint": "http://otel.observability:4317",
        "networkPolicy": {
            "egress": {"s3": {"to": [{"ipBlock": {"cidr": "10.50.0.0/16"}}]},
                       "postgres": {"to": [{"ipBlock": {"cidr": "10.60.0.10/32"}}], "ports": [6432]}},
            "ingress": {"api": {"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
                        "metrics": {"from": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]}}},
    }
    docs = manifests(render(chart, values))
    egress = {
        ("ip", "10.1.0.5", 9093): set(PODS), ("ip", "10.1.0.5", 9094): set(PODS), ("ip", "10.1.0.5", 9092): set(),
        ("ip", "10.1.0.7", 2222): {"ingest", "download"}, ("ip", "10.1.0.7", 22): {"ingest", "download"},
        ("ip", "10.50.3.4", 9000): S3_STAGES, ("ip", "10.51.3.4", 9000): set(),
        ("ip", "10.60.0.10", 6432): set(STAGES), ("ip", "10.60.0.11", 6432): set(), ("ip", "10.60.0.10", 5432): set(),
        ("ip", "10.1.0.9", 4317): set(STAGES), ("ip", "10.1.0.9", 4318): set(),
        # S3 narrowed to its own network: public https is the report's callbacks alone.
        ("ip", "203.0.113.10", 443): {"report"}, ("ip", "52.216.8.1", 443): {"report"},
    }
    for (kind, ip, port), reachers in egress.items():
        assert _reachers(docs, "Egress", (kind, ip), port) == reachers, (ip, port)
    nginx: Peer = ("pod", "ingress-nginx", {"app": "controller"})
    assert _reachers(docs, "Ingress", nginx, 8080) == {"ingest"}
    assert _reachers(docs, "Ingress", NEIGHBOUR, 8080) == set()
    assert _reachers(docs, "Ingress", ("pod", NAMESPACE, {"app": "prometheus"}), 9100) == set(STAGES)
    assert _reachers(docs, "Ingress", PROMETHEUS, 9100) == set()
    # Explicit ports win over the derived ones.
    docs = manifests(render(chart, {"networkPolicy": {"egress": {"kafka": {"ports": [9092, 9095]}}}}))
    assert _reachers(docs, "Egress", ("ip", "10.1.0.5"), 9095) == set(PODS)


def test_network_policies_can_be_turned_off(chart: Any) -> None:
    docs = manifests(render(chart, {"networkPolicy": {"enabled": False}}))
    assert not by_kind(docs, "NetworkPolicy")
    assert _reachers(docs, "Egress", ("ip", "169.254.169.254"), 80) == set(PODS)  # the evaluator: open
