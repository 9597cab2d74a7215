"""The Helm chart: lint, render, Kubernetes schemas (strict), and the scaling bound.

A stage's parallelism is its input topic's partition count; the chart must never ask for
more replicas than that, by hand or through KEDA, and must say so when values try.
"""

from __future__ import annotations

import json
import os
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
    RELEASE,
    ROOT,
    STAGES,
    by_kind,
    manifests,
    render,
    require_module,
)

VALUE_SETS = {"defaults": {}, "all-features": ALL_FEATURES}
# Custom resources: no schema in kubernetes-validate; checked field by field below.
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}


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
    for bad in ({"stages": {"validat": {"partitions": 4}}},
                {"stages": {"validate": {"partitions": 0}}},
                {"kafka": {"bootstrapServers": ""}},
                {"sftp": {"regions": "north"}},
                {"clickhouse": {"url": "chdb:///tmp/x"}},
                {"replicaCount": 3}):
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


def test_services_expose_the_http_apis_and_every_ops_port(chart: Any) -> None:
    services = by_kind(manifests(render(chart)), "Service")
    assert set(services) == {f"{RELEASE}-{s}" for s in STAGES}
    for stage in STAGES:
        ports = {p["name"]: p for p in services[f"{RELEASE}-{stage}"]["spec"]["ports"]}
        assert ports["metrics"]["targetPort"] == "metrics"
        assert ("http" in ports) == (stage in ("ingest", "report"))


def test_configmap_settings_exist_and_secrets_come_from_mounted_files(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    (config,) = by_kind(docs, "ConfigMap").values()
    fields = {name.upper() for name in Settings.model_fields}
    secret_fields = {"PG_DSN", "S3_ACCESS_KEY", "S3_SECRET_KEY", "API_TOKEN"}
    for key in config["data"]:
        name = key.removeprefix("FISCALFLOW_")
        assert name in fields or (name.endswith("_FILE") and name[:-5] in secret_fields), key
    # No secret value in the ConfigMap: each secret is a file of the projected Secret volume.
    assert not secret_fields & {k.removeprefix("FISCALFLOW_") for k in config["data"]}
    pod = by_kind(docs, "Deployment")[f"{RELEASE}-store"]["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secrets"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    files = {f"{mount['mountPath']}/{item['path']}"
             for source in volume["projected"]["sources"] for item in source["secret"]["items"]}
    wanted = {config["data"][f"FISCALFLOW_{n}_FILE"] for n in secret_fields}
    wanted |= {config["data"]["FISCALFLOW_SFTP_KEY"], config["data"]["FISCALFLOW_SFTP_KNOWN_HOSTS"]}
    assert wanted == files
    assert config["data"]["FISCALFLOW_HTTP_HOST"] == "0.0.0.0"
    assert config["data"]["FISCALFLOW_LOCAL_DIR"].startswith("/tmp/")


def test_topic_job_is_a_hook_creating_every_topic_with_the_stage_partitions(chart: Any) -> None:
    (job,) = by_kind(manifests(render(chart, ALL_FEATURES)), "Job").values()
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "--replication-factor" in container["command"] and "--increase-partitions" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # The Job's script, run with the Job's environment, plans exactly the pipeline's topics.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FISCALFLOW_")}
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "create_topics.py"), "--dry-run"],
                          env={**clean, **env}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    planned = {t["name"]: t["partitions"] for t in json.loads(proc.stdout)}
    stages = ALL_FEATURES["stages"]
    partitions = {Stage(s): stages.get(s, {}).get("partitions", Settings().partitions()[Stage(s)]) for s in STAGES}
    expected = {t.name: t.partitions for t in all_topics(partitions, ALL_FEATURES["topics"]["sharedPartitions"])}
    assert planned == expected
    assert planned["fiscal.validate"] == planned["fiscal.validate.priority"] == 12
    # Every topic gets the producers' message limit: the ConfigMap's, from kafka.messageMaxBytes.
    (config,) = by_kind(manifests(render(chart, ALL_FEATURES)), "ConfigMap").values()
    producers = config["data"]["FISCALFLOW_MESSAGE_MAX_BYTES"]
    assert producers == env["FISCALFLOW_MESSAGE_MAX_BYTES"] == "1000000"
    assert {t["config"]["max.message.bytes"] for t in json.loads(proc.stdout)} == {producers}


def test_the_message_limit_is_one_value(chart: Any) -> None:
    docs = manifests(render(chart, {"kafka": {"messageMaxBytes": 2_000_000}}))
    (config,) = by_kind(docs, "ConfigMap").values()
    (job,) = by_kind(docs, "Job").values()
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert config["data"]["FISCALFLOW_MESSAGE_MAX_BYTES"] == env["FISCALFLOW_MESSAGE_MAX_BYTES"] == "2000000"


def test_topic_job_can_be_turned_off(chart: Any) -> None:
    assert not by_kind(manifests(render(chart, {"topics": {"create": False}})), "Job")


def test_notes_tell_how_to_scale_a_stage_and_what_bounds_it(chart: Any) -> None:
    notes = render(chart)["fiscalflow/templates/NOTES.txt"]
    assert f"kubectl -n fiscal scale deploy/{RELEASE}-validate --replicas=N" in notes
    assert "bounded by the stage's partitions (4 for validate)" in notes


def test_service_monitor_scrapes_the_ops_port_of_every_stage(chart: Any) -> None:
    docs = manifests(render(chart, ALL_FEATURES))
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in by_kind(docs, "Service").values()
               if selector.items() <= s["metadata"]["labels"].items()]
    assert len(scraped) == len(STAGES)
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in scraped)


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
