"""The SDK's result types read from controller messages: named fields, string enums for
every state the protos define, None where a value does not exist yet, plain dicts of JSON
types, and the message kept as ``proto``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mnas.build import BuildParams
from mnas.results import (
    EventKind,
    Latency,
    LatencyFigure,
    ReferenceState,
    SearchEvent,
    SearchInfo,
    SearchState,
    Trial,
    TrialState,
)
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, controller_pb2

CANONICAL = (
    "stem:32 r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 head:1280 act:relu dropout:0.2"
)

SPEC = """
name: demo
space: {resolution: 28, num_classes: 10, width: 0.5}
objective: {kind: soft, target_latency_seconds: 0.002}
budget: {max_trials: 8, keep_weights: 2}
"""


def stamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def completed_trial() -> common_pb2.Trial:
    return common_pb2.Trial(
        search_id="s-1",
        number=3,
        architecture=common_pb2.Architecture(canonical=CANONICAL, id="abcd0123abcd0123"),
        state=common_pb2.TRIAL_STATE_COMPLETED,
        training=common_pb2.TrainResult(accuracy=0.81, loss=0.5, seconds=12.0),
        latency=common_pb2.LatencyStats(
            robust_seconds=0.0021,
            median_seconds=0.0023,
            min_seconds=0.002,
            p90_seconds=0.0025,
            mean_seconds=0.0024,
            samples_seconds=[0.002, 0.0023],
            device_class="host-cpu",
            device="host",
        ),
        reward=0.79,
        trainer="127.0.0.1:1",
        attempts=2,
        has_weights=True,
        created_at=stamp(1_700_000_000),
        finished_at=stamp(1_700_000_060),
    )


@pytest.mark.parametrize(
    ("ours", "theirs", "prefix"),
    [
        (SearchState, common_pb2.SearchState, "SEARCH_STATE_"),
        (TrialState, common_pb2.TrialState, "TRIAL_STATE_"),
        (ReferenceState, common_pb2.ReferenceState, "REFERENCE_STATE_"),
        (EventKind, controller_pb2.EventKind, "EVENT_KIND_"),
    ],
)
def test_every_proto_enum_value_has_its_string_member(ours, theirs, prefix) -> None:
    names = {name.removeprefix(prefix).lower() for name, _ in theirs.items()}
    assert names == {member.value for member in ours}
    for name, number in theirs.items():
        member = ours.from_proto(number)
        assert member == name.removeprefix(prefix).lower()
        assert isinstance(member, str)  # a StrEnum: prints, compares and serializes as text
    assert ours.from_proto(999) == "unspecified"  # a value from a newer controller


def test_finished_and_scored_states() -> None:
    assert {s for s in SearchState if s.finished} == {"succeeded", "failed", "cancelled"}
    assert {s for s in TrialState if s.scored} == {"completed", "stopped"}
    assert {s for s in TrialState if s.finished} == {"completed", "stopped", "failed", "cancelled"}


def test_a_completed_trial_has_named_fields() -> None:
    message = completed_trial()
    trial = Trial.from_proto(message)
    assert trial.state is TrialState.COMPLETED
    assert (trial.number, trial.search_id, trial.attempts) == (3, "s-1", 2)
    assert trial.architecture == CANONICAL
    assert trial.architecture_id == "abcd0123abcd0123"
    assert trial.blocks == "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24"
    assert trial.arch().canonical == CANONICAL
    assert (trial.accuracy, trial.loss, trial.reward) == (0.81, 0.5, 0.79)
    assert trial.latency_seconds == 0.0021
    assert trial.latency is not None and trial.latency.figure is LatencyFigure.ROBUST
    assert trial.latency.median_seconds == 0.0023 and not trial.latency.predicted
    assert trial.has_weights and trial.duplicate_of is None and trial.stopped_at_step is None
    assert trial.created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert trial.started_at is None
    assert trial.proto is message  # the raw message, for the fields not named


def test_values_that_do_not_exist_yet_are_none() -> None:
    running = Trial.from_proto(
        common_pb2.Trial(
            number=0,
            architecture=common_pb2.Architecture(canonical=CANONICAL),
            state=common_pb2.TRIAL_STATE_RUNNING,
        )
    )
    assert running.accuracy is None and running.reward is None
    assert running.latency is None and running.latency_seconds is None
    failed = completed_trial()
    failed.state = common_pb2.TRIAL_STATE_FAILED
    failed.error = "trainer x: out of memory"
    assert Trial.from_proto(failed).reward is None  # a stale number is no reward
    assert Trial.from_proto(failed).error == "trainer x: out of memory"


def test_a_latency_service_without_a_robust_figure_reports_the_median() -> None:
    latency = Latency.from_proto(
        common_pb2.LatencyStats(median_seconds=0.004, device_class="pixel-1-predicted")
    )
    assert latency.seconds == 0.004 and latency.figure is LatencyFigure.MEDIAN
    assert latency.predicted


def test_a_search_before_and_after_its_first_completed_trial() -> None:
    message = common_pb2.Search(
        id="s-1",
        spec=parse_spec(SPEC),
        state=common_pb2.SEARCH_STATE_RUNNING,
        trials_running=1,
        owner="alice",
    )
    info = SearchInfo.from_proto(message)
    assert (info.id, info.name, info.owner, info.max_trials) == ("s-1", "demo", "alice", 8)
    assert info.state is SearchState.RUNNING and not info.finished
    assert info.best_trial is None and info.best_reward is None  # not trial 0 at 0.0
    assert info.reference is None and info.finished_at is None
    assert info.build == BuildParams(num_classes=10, resolution=28, width=0.5)
    message.state = common_pb2.SEARCH_STATE_SUCCEEDED
    message.trials_completed = 1
    message.best_trial = 0
    message.best_reward = 0.7
    message.reference.CopyFrom(
        common_pb2.Reference(
            name="mnasnet-a1",
            state=common_pb2.REFERENCE_STATE_MEASURED,
            training=common_pb2.TrainResult(accuracy=0.8),
        )
    )
    info = SearchInfo.from_proto(message)
    assert info.finished and (info.best_trial, info.best_reward) == (0, 0.7)
    assert info.reference is not None and info.reference.accuracy == 0.8
    assert info.reference.state is ReferenceState.MEASURED


def test_build_parameters_default_to_the_builders() -> None:
    assert BuildParams.from_spec(common_pb2.SearchSpec()) == BuildParams(1000, 224, 1.0)


def test_to_dict_is_plain_json_without_the_message() -> None:
    info = SearchInfo.from_proto(
        common_pb2.Search(
            id="s-1",
            spec=parse_spec(SPEC),
            state=common_pb2.SEARCH_STATE_FAILED,
            error="too many failed trials",
            created_at=stamp(1_700_000_000),
        )
    )
    search = info.to_dict()
    assert json.loads(json.dumps(search)) == search
    assert "proto" not in search
    assert search["state"] == "failed" and type(search["state"]) is str
    assert search["created_at"] == "2023-11-14T22:13:20+00:00"
    assert search["spec"]["budget"]["keep_weights"] == 2  # snake_case, as specs are written
    assert search["strategy_status"] == {
        "observed": 0,
        "updates": 0,
        "entropy": None,
        "reference_log_prob": None,
    }
    trial = Trial.from_proto(completed_trial()).to_dict()
    assert json.loads(json.dumps(trial)) == trial
    assert trial["latency"]["figure"] == "robust" and "proto" not in trial["latency"]
    event = SearchEvent.from_proto(
        controller_pb2.WatchSearchResponse(
            kind=controller_pb2.EVENT_KIND_TRIAL_FINISHED,
            search=info.proto,
            trial=completed_trial(),
        )
    ).to_dict()
    assert event["kind"] == "trial_finished" and event["trial"]["number"] == 3
    assert json.loads(json.dumps(event)) == event


def test_a_row_flattens_the_latency_in_column_order() -> None:
    trial = Trial.from_proto(completed_trial())
    row = trial.to_row()
    assert list(row) == Trial.columns()
    assert "latency" not in row and "proto" not in row
    assert (row["latency_seconds"], row["latency_figure"], row["device_class"]) == (
        0.0021,
        "robust",
        "host-cpu",
    )
    unmeasured = Trial.from_proto(
        common_pb2.Trial(architecture=common_pb2.Architecture(canonical=CANONICAL))
    ).to_row()
    assert unmeasured["latency_seconds"] is None and unmeasured["device_class"] is None


def test_results_compare_by_value_and_hash() -> None:
    first, second = Trial.from_proto(completed_trial()), Trial.from_proto(completed_trial())
    assert first == second and first.proto is not second.proto
    assert len({first, second}) == 1
    info = SearchInfo.from_proto(common_pb2.Search(id="s", spec=parse_spec(SPEC)))
    again = SearchInfo.from_proto(common_pb2.Search(id="s", spec=parse_spec(SPEC)))
    assert info == again and hash(info) == hash(again)  # the spec message takes no part
