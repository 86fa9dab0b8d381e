"""The Controller servicer over real gRPC: bad specs refused, nothing stored, CLI exit 2.

The controller runs on a loopback port with a real SQLite store, its workers in process
(the latency service's core tells its device classes, the trainer which data sets it
serves): nothing here but one accepted submission gets past validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mnas.cli import main
from mnas.client import Client, InvalidSpec, SearchNotFound
from mnas.v1 import controller_pb2, controller_pb2_grpc
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import Stack, local_stack

GOOD = """
objective: {kind: soft, target_latency_seconds: 0.01}
budget: {max_trials: 4, parallel_trials: 2}
"""

# (what is wrong, the spec file's text, the field the message must name)
BAD_SPECS = [
    ("missing objective", "budget: {max_trials: 4}", "spec.objective"),
    ("zero budget", GOOD.replace("max_trials: 4", "max_trials: 0"), "spec.budget.max_trials"),
    ("negative budget", GOOD.replace("max_trials: 4", "max_trials: -2"), "spec.budget.max_trials"),
    (
        "parallel > max",
        GOOD.replace("parallel_trials: 2", "parallel_trials: 9"),
        "spec.budget.parallel_trials",
    ),
    (
        "unknown op",
        GOOD + "space: {choices: {ops: [conv, sepconv], kernels: [3], "
        "se_ratios: [0], skips: [identity], filter_ratios: [1], layer_deltas: [0]}}",
        "spec.space.choices.ops",
    ),
    ("T <= 0", GOOD.replace("0.01", "0"), "spec.objective.target_latency_seconds"),
    ("alpha > 0", GOOD.replace("0.01}", "0.01, alpha: 0.2}"), "spec.objective.alpha"),
    (
        "unknown dataset path",
        GOOD + "training: {dataset: /no/such/dataset}",
        "spec.training.dataset",
    ),
    ("resolution too small", GOOD + "space: {resolution: 8}", "spec.space.resolution"),
    ("unknown strategy", GOOD + "strategy: simulated-annealing", "spec.strategy"),
    (
        "unknown device class",
        GOOD + "latency: {device_class: pixel-1}",
        "spec.latency.device_class",
    ),
    (
        "empty choices",
        GOOD + "space: {choices: {ops: [dconv, mbconv6], kernels: [], se_ratios: [0], "
        "skips: [identity], filter_ratios: [1], layer_deltas: [0]}}",
        "spec.space.choices.kernels",
    ),
    ("malformed YAML", "objective: {kind: soft\nbudget: [", "malformed YAML"),
    ("unknown field", GOOD + "budgett: {max_trials: 3}", "budgett"),
    ("wrong type", GOOD.replace("max_trials: 4", "max_trials: many"), "max_trials"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with local_stack(tmp_path, InProcessWorkers(instant_training)) as running:
        yield running


@pytest.mark.parametrize(
    ("text", "field"), [b[1:] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS]
)
def test_bad_spec_cli_prints_one_line_exits_2_and_stores_nothing(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    field: str,
) -> None:
    store = stack.store
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code = main(["submit", str(path), "--target", stack.address])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("mnas: error: ")
    assert field in line
    assert store.list_searches() == []


@pytest.mark.parametrize(
    ("text", "field"), [b[1:] for b in BAD_SPECS[:12]], ids=[b[0] for b in BAD_SPECS[:12]]
)
def test_bad_spec_is_invalid_argument_naming_the_field(stack: Stack, text: str, field: str) -> None:
    from mnas.specfile import parse_spec

    store = stack.store
    stub = controller_pb2_grpc.ControllerStub(grpc.insecure_channel(stack.address))
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitSearch(controller_pb2.SubmitSearchRequest(spec=parse_spec(text)), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith(field)
    assert store.list_searches() == []


def test_invalid_argument_lists_every_problem(stack: Stack) -> None:
    """Each problem on its own line, those only the workers can tell (the device class)
    among them."""
    from mnas.specfile import parse_spec

    store = stack.store
    text = GOOD.replace("parallel_trials: 2", "parallel_trials: 9") + (
        "strategy: ppo9000\nlatency: {device_class: pixel-1}\n"
    )
    stub = controller_pb2_grpc.ControllerStub(grpc.insecure_channel(stack.address))
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitSearch(controller_pb2.SubmitSearchRequest(spec=parse_spec(text)), timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    lines = str(info.value.details()).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "spec.budget.parallel_trials",
        "spec.latency.device_class",
        "spec.strategy",
    ]
    assert store.list_searches() == []


def test_the_cli_prints_each_problem_the_controller_finds(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problems only the workers' facts show pass the offline check; the controller's
    answer is printed one line per problem."""
    store = stack.store
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD + "training: {validation_examples: 60000}\nlatency: {device_class: x}\n")
    code = main(["submit", str(path), "--target", stack.address])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert [line.split(": ")[2] for line in err.splitlines()] == [
        "spec.training.validation_examples",
        "spec.latency.device_class",
    ]
    assert all(line.startswith("mnas: error: ") for line in err.splitlines())
    assert store.list_searches() == []


def test_sdk_maps_codes_to_exceptions(stack: Stack) -> None:
    from mnas.specfile import parse_spec

    with Client(stack.address) as client:
        with pytest.raises(InvalidSpec, match=r"spec\.objective"):
            client.submit(parse_spec("budget: {max_trials: 1}"))
        with pytest.raises(SearchNotFound, match="nope"):
            client.search("nope")
        assert client.searches() == []


def test_a_chosen_search_id_is_taken_once(stack: Stack) -> None:
    """A client that retries a submission with the same id submits exactly once."""
    from mnas.client import SearchExists
    from mnas.specfile import parse_spec

    store = stack.store
    with Client(stack.address) as client:
        search = client.submit(parse_spec(GOOD), search_id="k8s-0123abcd")
        assert search.id == "k8s-0123abcd"
        with pytest.raises(SearchExists, match="k8s-0123abcd"):
            client.submit(parse_spec(GOOD), search_id="k8s-0123abcd")
    assert [s.id for s in store.list_searches()] == ["k8s-0123abcd"]


@pytest.mark.parametrize("bad", ["UPPER", "-lead", "trail-", "a" * 64, "has space", "a_b"])
def test_a_malformed_search_id_is_invalid_argument(stack: Stack, bad: str) -> None:
    from mnas.specfile import parse_spec

    store = stack.store
    stub = controller_pb2_grpc.ControllerStub(grpc.insecure_channel(stack.address))
    request = controller_pb2.SubmitSearchRequest(spec=parse_spec(GOOD), search_id=bad)
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitSearch(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("search_id: ")
    assert store.list_searches() == []


def test_list_in_a_pipe_prints_every_value_whole(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Standard output is not a terminal here, as in `mnas list | grep`: rich would
    assume 80 columns and cut the long name and the state ("succe…")."""
    name = "a-search-whose-name-is-long-enough-to-be-cut-at-eighty-columns"
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD + f"name: {name}\nreference: none\n")
    assert main(["submit", str(path), "--target", stack.address]) == 0
    search_id = capsys.readouterr().out.strip()
    assert main(["list", "--target", stack.address]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    (row,) = [line for line in out.splitlines() if search_id in line]
    assert name in row
    assert "running" in row or "failed" in row or "succeeded" in row
