"""deploy/prometheus and deploy/grafana: promtool accepts the rules and their unit tests pass;
the stuck-document rules match ``StuckAlertSettings``; every alert is documented.

promtool comes from Debian's ``prometheus`` package (``scripts/ensure-test-tools.sh``). When
it is missing these tests skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.settings import StuckAlertSettings
from store.states import DocumentStatus

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fapiao-dashboard.json"
ANNOTATIONS = {"summary", "summary_zh", "description", "description_zh", "runbook"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: run scripts/ensure-test-tools.sh (Debian's prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    ("what", "file"),
    [pytest.param("rules", "alerts.yml", id="alert_rules"),
     pytest.param("config", "prometheus.yml", id="example_scrape_config")],
)  # fmt: skip
def test_promtool_checks(what: str, file: str) -> None:
    result = run_promtool("check", what, file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_the_stuck_paused_and_quota_alerts() -> None:
    result = run_promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8")
    for alert in ("FapiaoDocumentsStuck", "FapiaoTenantPaused", "FapiaoQuotaWarning",
                  "FapiaoQuotaHeld", "FapiaoReconciliationOrphans",
                  "FapiaoReconciliationTotalMismatch",
                  "FapiaoReconciliationNotRunning"):  # fmt: skip
        assert f"alertname: {alert}" in tested


def test_one_stuck_rule_per_state_at_the_settings_default_age() -> None:
    defaults = StuckAlertSettings()
    expected = {
        state.value: defaults.for_state(state.value)
        for state in DocumentStatus
        if defaults.for_state(state.value) is not None
    }
    found: dict[str, int] = {}
    for rule in rules():
        if rule["alert"] == "FapiaoDocumentsStuck":
            state = rule["labels"]["state"]
            assert f'fapiao_documents_oldest_age_seconds{{state="{state}"}}' in rule["expr"]
            found[state] = int(rule["expr"].rsplit(">", 1)[1])
    assert found == expected


def test_every_alert_says_what_and_why_in_english_and_chinese_with_a_runbook() -> None:
    for rule in rules():
        assert set(rule["annotations"]) >= ANNOTATIONS, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in rule["annotations"]["summary_zh"])


def test_the_dashboard_is_grafana_json_with_unique_panels_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels)
    for topic in ("Documents by state", "Oldest", "latency", "invoiced", "error", "Queue",
                  "Parked", "Paused"):  # fmt: skip
        assert topic in titles, topic
