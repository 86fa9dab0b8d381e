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


def test_client_retry_policy_covers_unary_methods_only() -> None:
    """Streams are not retried by gRPC: a retried stream hung when its server died."""
    import json

    from mnas.rpc import _service_config
    from mnas.v1 import controller_pb2, trainer_pb2

    config = json.loads(_service_config(3, 0.1, 1.0))
    names = {(n["service"], n["method"]) for n in config["methodConfig"][0]["name"]}
    assert ("mnas.v1.Controller", "SubmitSearch") in names
    assert ("mnas.v1.Latency", "Measure") in names
    streaming = {
        (s.full_name, m.name)
        for module in (controller_pb2, trainer_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
        if m.server_streaming
    }
    assert streaming == {
        ("mnas.v1.Controller", "WatchSearch"),
        ("mnas.v1.Controller", "GetWeights"),
        ("mnas.v1.Trainer", "Train"),
    }
    assert not names & streaming
