"""The fault-injection scenarios of ``benchmarks/faults.py``, each as a test: real
processes on loopback, one fault, and nothing lost or duplicated. No phone is attached
here: the phone scenario's latency service measures on two phones of a loopback peer
that speaks adb's real protocol (``tests.latency.phones.adb_peer``), one of which drops
off mid-measurement."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import SCENARIOS, CannotRun, run_scenario

pytestmark = pytest.mark.slow  # each trains a small real search: about a minute


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_fault_loses_and_duplicates_no_trial(name: str, tmp_path: Path) -> None:
    try:
        result = run_scenario(name, tmp_path)
    except CannotRun as err:
        pytest.skip(str(err))
    assert result["succeeded"] is True, result
    assert result["trials_lost"] == 0, result
    assert result["trials_duplicated"] == 0, result
    assert result["recovery_seconds"] is not None, result
