"""The checked-in stubs are what scripts/gen_protos.sh makes from protos/ today."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_text() for p in (tmp_path / "mnas" / "v1").iterdir()}
    checked_in = {p.name: p.read_text() for p in (ROOT / "mnas" / "v1").iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(checked_in), "run scripts/gen_protos.sh and commit"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"stale stubs {stale}: run scripts/gen_protos.sh and commit"


def test_every_proto_is_in_package_mnas_v1() -> None:
    for proto in (ROOT / "protos" / "mnas" / "v1").glob("*.proto"):
        assert "\npackage mnas.v1;\n" in proto.read_text(), proto.name
