"""``mnas validate`` as a user runs it (a subprocess), and the same checks in front of
``mnas submit`` and ``mnas search``: every error at once, one line each, exit status 2,
nothing started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnas.local import free_port

ROOT = Path(__file__).resolve().parents[2]
MNAS = Path(sys.executable).parent / "mnas"
BAD = """
objective: {kind: sofft, target_latency_seconds: 0.01}
budget: {max_trial: 4}
training: {batch_size: 0}
space: {width: 0}
strategy: pp0
"""
BAD_PATHS = [
    "objective.kind",
    "budget.max_trial",
    "budget.max_trials",
    "training.batch_size",
    "space.width",
    "strategy",
]


def mnas(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MNAS), *argv], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def _error_paths(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("mnas: error: spec.") for line in lines), stderr
    return [line.removeprefix("mnas: error: spec.").split(": ")[0] for line in lines]


def test_a_valid_spec_exits_0_with_what_the_search_will_run() -> None:
    result = mnas("validate", "examples/quickstart.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "examples/quickstart.yaml: valid"
    text = result.stdout
    assert "strategy   random, seed 1" in text
    assert "trials     8, 1 at a time" in text
    assert "objective  soft, T = 0.1 ms" in text
    assert "training   fashion-mnist: 1 epoch over 10,000 examples" in text


def test_json_output_of_a_valid_spec() -> None:
    result = mnas("validate", "examples/ppo.yaml", "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["errors"] == [] and report["warnings"] == []
    summary = report["summary"]
    assert summary["strategy"] == "ppo"
    assert summary["budget"]["max_trials"] == 400
    assert summary["objective"] == {"kind": "soft", "target_latency_seconds": 0.0001}
    assert summary["training"]["dataset"] == "fashion-mnist"
    assert summary["space"]["preset"] == "small-images"
    assert summary["space"]["size"] == 432**5


def test_every_error_is_one_line_and_the_exit_status_is_2(bad: Path) -> None:
    result = mnas("validate", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert _error_paths(result.stderr) == BAD_PATHS
    assert "spec.budget.max_trial: unknown field; did you mean 'max_trials'?" in result.stderr
    assert "did you mean 'soft'?" in result.stderr


def test_json_output_lists_every_error(bad: Path) -> None:
    result = mnas("validate", str(bad), "-o", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["summary"] is None
    assert [e["path"] for e in report["errors"]] == BAD_PATHS


def test_a_warning_does_not_fail_validation(tmp_path: Path) -> None:
    path = tmp_path / "cifar.yaml"
    path.write_text(
        (ROOT / "examples/quickstart.yaml").read_text().replace("fashion-mnist", "cifar100")
    )
    result = mnas("validate", str(path))
    assert result.returncode == 0
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("mnas: warning: spec.training.dataset: 'cifar100' is not built in")


@pytest.mark.parametrize(
    "content", [None, "budget: [", "- a list\n"], ids=["missing", "yaml", "list"]
)
def test_a_file_that_is_no_spec_is_one_line_exit_2(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    result = mnas("validate", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mnas: error: {path}: ")


def test_submit_checks_the_spec_before_connecting(bad: Path) -> None:
    """Nothing listens on the target: a spec error (2) comes before unreachable (3)."""
    result = mnas("submit", str(bad), "--target", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert _error_paths(result.stderr) == BAD_PATHS


def test_search_starts_nothing_for_a_bad_spec(bad: Path, tmp_path: Path) -> None:
    logs, store = tmp_path / "logs", tmp_path / "mnas.db"
    result = mnas("search", str(bad), "--logs", str(logs), "--store", str(store))
    assert result.returncode == 2
    assert _error_paths(result.stderr) == BAD_PATHS
    assert not logs.exists() and not store.exists()
