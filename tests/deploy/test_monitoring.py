"""The chart's monitoring (issue 17): the Grafana dashboard and the PrometheusRule.

Both are PromQL over the metrics the services export.  Every metric name they use must be one the
code declares (Counter/Gauge/Histogram in services/ and shared/, with the suffixes the Prometheus
client exposes) and the README's metrics table documents, so a renamed metric fails here.  Every
expression must parse (promql-parser, Prometheus's grammar; `promtool check rules` and a few rule
unit tests as well when promtool is installed), every rule's thresholds come from the values, and
every alert's runbook_url points at a section of docs/deploy.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ALL_FEATURES, CHART, NAMESPACE, RELEASE, ROOT, by_kind, manifests, merged, render, require_module

DASHBOARD_FILE = CHART / "dashboards" / "fiscalflow.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
ALERTS = {
    "FiscalflowFailureRateHigh",
    "FiscalflowConsumerLagGrowing",
    "FiscalflowStageHalted",
    "FiscalflowStagePaused",
    "FiscalflowDeadLettersGrowing",
    "FiscalflowBrokerLostLog",
    "FiscalflowReportWritesFailing",
    "FiscalflowCallbacksFailing",
    "FiscalflowReportsOutOfStep",
}
# What the dashboard must show (issue 17): processed, failures, lag, in flight, halted and paused
# stages, dead letters, job duration, API backpressure, report events and rows.
DASHBOARD_METRICS = {
    "fiscalflow_messages_processed_total",
    "fiscalflow_messages_failed_total",
    "fiscalflow_consumer_lag",
    "fiscalflow_in_flight",
    "fiscalflow_bytes_in_flight",
    "fiscalflow_stage_halted",
    "fiscalflow_stage_paused",
    "fiscalflow_dead_letters_total",
    "fiscalflow_job_duration_seconds_bucket",
    "fiscalflow_api_backpressure_total",
    "fiscalflow_report_events_total",
    "fiscalflow_report_rows_total",
}
MONITORING = {"prometheusRule": {"enabled": True}, "grafana": {"dashboard": {"enabled": True}}}
# The PrometheusRule CRD's pattern of a rule's `for`.
FOR_PATTERN = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


# --- the metrics the code exports -----------------------------------------------------------------

_DECLARATION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*[\"'](fiscalflow_\w+)[\"']")
_SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count"),
             "Summary": ("_sum", "_count")}


def exported_series() -> dict[str, str]:
    """Every series name the services expose -> the name the README documents it under (counters
    with _total, histograms by their base name), from the declarations in services/ and shared/."""
    out: dict[str, str] = {}
    for top in ("services", "shared"):
        for path in (ROOT / top).rglob("*.py"):
            for kind, name in _DECLARATION.findall(path.read_text()):
                base = name.removesuffix("_total") if kind == "Counter" else name
                documented = base + "_total" if kind == "Counter" else base
                for suffix in _SUFFIXES[kind]:
                    out[base + suffix] = documented
    return out


def documented_metrics() -> set[str]:
    """The metric names of the README's metrics table (`| \\`fiscalflow_...\\` | labels | meaning |`)."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `fiscalflow_"):
            names.update(re.findall(r"`(fiscalflow_\w+)`", line.split("|")[1]))
    return names


def test_the_metric_inventory_is_read_from_the_code_and_the_readme() -> None:
    series = exported_series()
    # The scan sees the runtime's, the ingest API's and the report service's declarations.
    assert {"fiscalflow_messages_processed_total", "fiscalflow_stage_halted", "fiscalflow_stage_latency_seconds_bucket",
            "fiscalflow_api_backpressure_total", "fiscalflow_report_write_failures_total"} <= set(series)
    assert "fiscalflow_messages_processed" not in series  # counters are exposed with _total only
    assert {"fiscalflow_consumer_lag", "fiscalflow_job_duration_seconds"} <= documented_metrics()


# --- PromQL ----------------------------------------------------------------------------------------


def promql() -> Any:
    require_module("promql_parser")
    import promql_parser

    return promql_parser


def selectors(expr: str) -> list[Any]:
    """The vector selectors of a PromQL expression (ValueError if it does not parse)."""
    p = promql()
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, p.VectorSelector):
            found.append(node)

    p.walk(p.parse(expr), visit)
    return found


def numbers(expr: str) -> list[float]:
    p = promql()
    found: list[float] = []

    def visit(node: Any) -> None:
        if isinstance(node, p.NumberLiteral):
            found.append(node.val)

    p.walk(p.parse(expr), visit)
    return found


def balanced(expr: str) -> bool:
    """Parentheses, brackets and braces nest (outside quoted strings): a check that needs no parser."""
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], ""
    for ch in expr:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not quote


def check_metric_names(exprs: list[str]) -> set[str]:
    """Every metric the expressions name is exported by the code and documented in the README (by
    text, so that this holds without the parser too); returns the names used."""
    series, documented = exported_series(), documented_metrics()
    used: set[str] = set()
    for expr in exprs:
        assert balanced(expr), expr
        named = set(re.findall(r"\bfiscalflow_\w+", expr))
        assert named, expr
        unknown = named - set(series)
        assert not unknown, f"{expr}: no such metric in services/ or shared/: {sorted(unknown)}"
        undocumented = {series[n] for n in named} - documented
        assert not undocumented, f"{expr}: not in the README's metrics table: {sorted(undocumented)}"
        used |= named
    return used


def test_the_checks_catch_a_renamed_metric_and_a_broken_expression() -> None:
    with pytest.raises(AssertionError, match="no such metric"):
        check_metric_names(["sum(rate(fiscalflow_messages_handled_total[5m]))"])
    with pytest.raises(AssertionError):
        check_metric_names(["sum(rate(fiscalflow_messages_processed_total[5m])"])
    with pytest.raises(ValueError):
        selectors("sum(rate(fiscalflow_messages_processed_total[5m])")
    assert [s.name for s in selectors("rate(fiscalflow_dead_letters_total[5m]) / rate(fiscalflow_in_flight[5m])")] == \
        ["fiscalflow_dead_letters_total", "fiscalflow_in_flight"]


# --- the Grafana dashboard ------------------------------------------------------------------------


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def grafana_to_promql(expr: str) -> str:
    """A panel's query as Prometheus receives it: Grafana's interval variables become a range, the
    dashboard's own variables (all inside regex matchers) match anything."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?(namespace|stage)\}?", ".*", expr)


def dashboard_configmap(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "ConfigMap")[f"{RELEASE}-dashboard"]


def test_the_dashboard_is_off_by_default_and_a_sidecar_configmap_when_on(chart: Any) -> None:
    assert set(by_kind(manifests(render(chart)), "ConfigMap")) == {f"{RELEASE}-config"}
    docs = manifests(render(chart, MONITORING))
    cm = dashboard_configmap(docs)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    (key,) = cm["data"]
    assert key.endswith(".json")
    # The chart's file, verbatim.
    assert json.loads(cm["data"][key]) == json.loads(DASHBOARD_FILE.read_text())
    # The sidecar's label, its value, the namespace it watches and its annotations are values.
    values = {"grafana": {"dashboard": {"enabled": True, "label": "grafana.io/dashboard", "labelValue": "fiscal",
                                        "namespace": "monitoring", "annotations": {"grafana_folder": "fiscalflow"},
                                        "labels": {"team": "fiscal"}}}}
    cm = dashboard_configmap(manifests(render(chart, values)))
    assert cm["metadata"]["labels"]["grafana.io/dashboard"] == "fiscal"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["labels"]["team"] == "fiscal"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "fiscalflow"}


def test_the_dashboard_is_valid_grafana_json_querying_only_exported_metrics(chart: Any) -> None:
    cm = dashboard_configmap(manifests(render(chart, ALL_FEATURES)))
    dashboard = json.loads(next(iter(cm["data"].values())))
    assert dashboard["uid"] == "fiscalflow" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exprs: list[str] = []
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] >= 1, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            exprs.append(grafana_to_promql(target["expr"]))
    # The variables' own queries, label_values(<metric>{...}, <label>).
    for var in variables.values():
        if var["type"] == "query":
            (metric_selector,) = re.findall(r"label_values\((.+),\s*\w+\)$", var["query"]["query"])
            exprs.append(grafana_to_promql(metric_selector))
    used = check_metric_names(exprs)
    assert used >= DASHBOARD_METRICS, sorted(DASHBOARD_METRICS - used)
    for expr in exprs:
        names = [s.name for s in selectors(expr)]
        assert names and None not in names, expr
        assert set(names) == set(re.findall(r"\bfiscalflow_\w+", expr)), expr


def test_the_dashboard_file_has_no_helm_template_markers() -> None:
    # It is loaded with .Files.Get, never templated: Grafana's {{label}} legends stay as they are.
    text = DASHBOARD_FILE.read_text()
    assert "{{stage}}" in text and "{{-" not in text and ".Values" not in text


# --- the PrometheusRule ---------------------------------------------------------------------------


def prometheus_rule(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = by_kind(docs, "PrometheusRule").values()
    return rule


def alert_rules(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert len(by_name) == len(rules), "alert names repeat"
    return by_name


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub's) gives the headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def test_the_prometheus_rule_is_off_by_default(chart: Any) -> None:
    assert not by_kind(manifests(render(chart)), "PrometheusRule")
    assert not by_kind(manifests(render(chart, {"grafana": {"dashboard": {"enabled": True}}})), "PrometheusRule")
    assert by_kind(manifests(render(chart, {"prometheusRule": {"enabled": True}})), "PrometheusRule")


def test_the_prometheus_rule_has_the_alerts_each_parsed_documented_and_scoped(chart: Any) -> None:
    rule = prometheus_rule(manifests(render(chart, ALL_FEATURES)))
    # A custom resource (no schema in kubernetes-validate): the CRD's fields, checked here.
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    assert rule["metadata"]["name"] == RELEASE
    assert rule["metadata"]["labels"]["release"] == "prometheus"  # ALL_FEATURES' ruleSelector label
    group_names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"}
    alerts = alert_rules(rule)
    assert set(alerts) == ALERTS
    anchors = heading_anchors(DEPLOY_DOC.read_text())
    check_metric_names([r["expr"] for r in alerts.values()])
    for name, r in alerts.items():
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert FOR_PATTERN.match(r["for"]) and r["for"] != "", name
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert all(isinstance(v, str) for v in r["labels"].values()), name
        notes = r["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        # Alertmanager's template markers survive Helm's templating.
        assert "{{ $labels." in notes["summary"] + notes["description"] or name == "FiscalflowReportWritesFailing", name
        assert "{{ $labels.namespace }}" in notes["description"], name
        doc, anchor = notes["runbook_url"].split("#")
        assert doc == "docs/deploy.md" and anchor == name.lower() and anchor in anchors, name
        # Scoped to the release's namespace: every selector carries the matcher.
        for selector in selectors(r["expr"]):
            assert 'namespace="fiscal"' in str(selector), (name, str(selector))


def test_seed_000s_failure_threshold_is_the_default_and_every_threshold_is_a_value(chart: Any) -> None:
    defaults = alert_rules(prometheus_rule(manifests(render(chart, {"prometheusRule": {"enabled": True}}))))
    failure = defaults["FiscalflowFailureRateHigh"]
    assert 0.05 in numbers(failure["expr"]) and failure["for"] == "10m"
    assert 'outcome="dead_letter"' in failure["expr"] and "[10m]" in failure["expr"]
    assert defaults["FiscalflowStageHalted"]["for"] == "1m"
    assert "deriv(" in defaults["FiscalflowConsumerLagGrowing"]["expr"]
    values = {"prometheusRule": {
        "enabled": True,
        "matchers": 'cluster="mx-1", namespace="fiscal-prod"',
        "runbookUrl": "https://git.example/fiscalflow/blob/main/docs/deploy.md",
        "alertLabels": {"team": "fiscal"},
        "labels": {"release": "kube-prometheus-stack"},
        "failureRate": {"threshold": 0.02, "window": "30m", "for": "20m", "severity": "page"},
        "consumerLag": {"threshold": 25000, "window": "1h", "for": "30m", "severity": "ticket"},
        "stageHalted": {"for": "5m", "severity": "page"},
        "stagePaused": {"for": "1h"},
        "deadLetters": {"threshold": 7, "window": "2h"},
        "reportWrites": {"window": "20m", "for": "0"},
        "callbacks": {"threshold": 3, "window": "1h", "for": "2m", "severity": "ticket"},
        "reportsOutOfStep": {"for": "1h"},
    }}
    rule = prometheus_rule(manifests(render(chart, values)))
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = alert_rules(rule)
    expected = {  # alert: (a number in its expr, its range, its for, its severity)
        "FiscalflowFailureRateHigh": (0.02, "[30m]", "20m", "page"),
        "FiscalflowConsumerLagGrowing": (25000, "[1h]", "30m", "ticket"),
        "FiscalflowStageHalted": (1, None, "5m", "page"),
        "FiscalflowStagePaused": (1, None, "1h", "warning"),
        "FiscalflowDeadLettersGrowing": (7, "[2h]", "5m", "warning"),
        "FiscalflowReportWritesFailing": (0, "[20m]", "0", "warning"),
        "FiscalflowCallbacksFailing": (3, "[1h]", "2m", "ticket"),
        "FiscalflowReportsOutOfStep": (0, None, "1h", "warning"),
    }
    for name, (number, window, for_, severity) in expected.items():
        r = alerts[name]
        assert number in numbers(r["expr"]), name
        assert window is None or window in r["expr"], name
        assert (r["for"], r["labels"]["severity"], r["labels"]["team"]) == (for_, severity, "fiscal"), name
        assert r["annotations"]["runbook_url"] == f"{values['prometheusRule']['runbookUrl']}#{name.lower()}"
        for selector in selectors(r["expr"]):
            assert 'cluster="mx-1"' in str(selector) and 'namespace="fiscal-prod"' in str(selector), name
    assert "more than 2 % of the messages" in alerts["FiscalflowFailureRateHigh"]["annotations"]["description"]


def test_the_values_schema_refuses_nonsense_thresholds_and_durations(chart: Any, helm: Any) -> None:
    chart.validate_schema(merged(ALL_FEATURES, MONITORING))
    for bad in [
        {"prometheusRule": {"failureRate": {"threshold": 5}}},  # a share, not a percentage
        {"prometheusRule": {"failureRate": {"window": "ten minutes"}}},
        {"prometheusRule": {"stageHalted": {"for": "1 m"}}},
        {"prometheusRule": {"consumerLag": {"threshold": -1}}},
        {"prometheusRule": {"enable": True}},
        {"grafana": {"dashboard": {"enable": True}}},
    ]:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(merged(MONITORING, bad))


# --- promtool, when installed ---------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); promql-parser checked the rules")
    return path


def _rules_file(chart: Any, tmp_path: Path) -> Path:
    rule = prometheus_rule(manifests(render(chart, {"prometheusRule": {"enabled": True}})))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_checks_the_rules(chart: Any, tmp_path: Path) -> None:
    promtool = _promtool()
    proc = subprocess.run([promtool, "check", "rules", str(_rules_file(chart, tmp_path))],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_promtool_fires_the_failure_rate_above_5_percent_and_the_halt(chart: Any, tmp_path: Path) -> None:
    # Per minute the validate stage finishes 100 messages: 6 dead letters (6 %) fires after 10m, and
    # the store stage's 4 (4 %) never does; validate halts at minute 5.
    promtool = _promtool()
    rules = _rules_file(chart, tmp_path)
    series = 'fiscalflow_messages_processed_total{namespace="fiscal", stage="%s", outcome="%s"}'
    tests = {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": series % ("validate", "ok"), "values": "0+94x40"},
            {"series": series % ("validate", "dead_letter"), "values": "0+6x40"},
            {"series": series % ("store", "ok"), "values": "0+96x40"},
            {"series": series % ("store", "dead_letter"), "values": "0+4x40"},
            {"series": 'fiscalflow_stage_halted{namespace="fiscal", stage="validate", pod="v-0"}',
             "values": "0x4 1x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "FiscalflowFailureRateHigh", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "FiscalflowStageHalted", "exp_alerts": []},
            {"eval_time": "7m", "alertname": "FiscalflowStageHalted", "exp_alerts": [
                {"exp_labels": {"severity": "critical", "namespace": "fiscal", "stage": "validate"},
                 "exp_annotations": {
                     "summary": "Stage validate is halted by its reject-ratio breaker",
                     "description": "Most recent messages of stage validate (namespace fiscal) became dead "
                                    "letters, so it stopped consuming; its backlog waits in Kafka. Fix the cause, "
                                    "then restart the stage.",
                     "runbook_url": "docs/deploy.md#fiscalflowstagehalted"}}]},
        ],
    }]}
    # The failure rate alert at 25m: validate only; its annotations as Alertmanager shows them.
    rule = alert_rules(prometheus_rule(manifests(render(chart, {"prometheusRule": {"enabled": True}}))))
    failure_notes = rule["FiscalflowFailureRateHigh"]["annotations"]
    tests["tests"][0]["alert_rule_test"].append(
        {"eval_time": "25m", "alertname": "FiscalflowFailureRateHigh", "exp_alerts": [
            {"exp_labels": {"severity": "critical", "namespace": "fiscal", "stage": "validate"},
             "exp_annotations": {
                 "summary": "Stage validate: 6% of its messages become dead letters",
                 "description": failure_notes["description"].replace("{{ $labels.stage }}", "validate")
                                .replace("{{ $labels.namespace }}", "fiscal"),
                 "runbook_url": "docs/deploy.md#fiscalflowfailureratehigh"}}]})
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", spec.name], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
