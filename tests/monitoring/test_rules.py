"""The alerting rules: promtool checks them and runs their unit tests (alerts_test.yaml:
for each alert, series that fire it and series that must not)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.monitoring import grafana

TESTS = Path(__file__).with_name("alerts_test.yaml")
ALERTS = {
    "MnasSearchNoProgress",
    "MnasTrialFailureRatioHigh",
    "MnasPhoneUnhealthy",
    "MnasPhoneHot",
    "MnasNoWorkerReachable",
    "MnasRpcErrorRatioHigh",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(grafana.RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_the_alerts_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", str(TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    rules = yaml.safe_load(grafana.RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    cases = [
        case
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fired == ALERTS, sorted(ALERTS - fired)
    # The ones with a quiet case; the others' tests hold series that do not fire.
    assert quiet >= ALERTS - {"MnasPhoneHot"}, sorted(ALERTS - quiet)


def test_a_broken_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: with the hot-phone threshold lowered, the phone at 45 °C
    fires too and promtool reports it."""
    rules = tmp_path / "rules" / "mnas-alerts.yaml"
    rules.parent.mkdir()
    rules.write_text(
        grafana.RULES.read_text().replace(
            "mnas_phone_temperature_celsius > 45", "mnas_phone_temperature_celsius > 44"
        )
    )
    tests = tmp_path / "tests" / "alerts_test.yaml"
    tests.parent.mkdir()
    text = TESTS.read_text().replace("../../k8s/components/monitoring/rules/", "../rules/")
    tests.write_text(text)
    done = promtool("test", "rules", str(tests))
    assert done.returncode != 0, done.stdout
    assert "MnasPhoneHot" in done.stdout + done.stderr
