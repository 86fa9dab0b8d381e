"""Bad input, generated: whatever a client sends as a spec (YAML or a proto), a block
string, a token file or call metadata, the answer is a clear error (a ``ValueError``
naming what is wrong, INVALID_ARGUMENT over gRPC) and never another exception, a hang or
a stored half-search; a message over the size limit is refused.

Properties run with hypothesis; the gRPC ones against a real controller on loopback, its
workers in process (a training that answers at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnas.arch import decode
from mnas.errors import InvalidInput
from mnas.rpc import channel
from mnas.specfile import parse_spec, spec_from_document
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from services.controller.spec import resolve
from services.controller.strategies import STRATEGIES
from services.controller.users import User, Users
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import Stack, local_stack
from tests.controller.test_spec import DEVICES, FASHION

# Field names a spec document may hold, at any depth, so generated documents often reach
# the deeper checks instead of failing on the first unknown key.
KEYS = [
    *common_pb2.SearchSpec.DESCRIPTOR.fields_by_name,
    *common_pb2.SearchSpaceSpec.DESCRIPTOR.fields_by_name,
    *common_pb2.Budget.DESCRIPTOR.fields_by_name,
    *common_pb2.Training.DESCRIPTOR.fields_by_name,
    *common_pb2.Objective.DESCRIPTOR.fields_by_name,
    *common_pb2.LatencySettings.DESCRIPTOR.fields_by_name,
    "stages",
    "choices",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["soft", "hard", "ppo", "random", "small-images", "fashion-mnist", "-1"]),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=25,
)


def _check(spec: common_pb2.SearchSpec) -> None:
    resolve(spec, dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_spec_document_is_accepted_or_refused_with_a_value_error(document: Any) -> None:
    try:
        spec = spec_from_document(document)
        _check(spec)
    except ValueError as err:
        assert str(err)  # says what is wrong
    # Anything else (TypeError, KeyError, RecursionError, ...) fails the test.


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_spec_text_is_parsed_or_refused_with_a_value_error(text: str) -> None:
    try:
        _check(parse_spec(text))
    except ValueError as err:
        assert str(err)


def _proto_values(field: Any) -> st.SearchStrategy[Any]:
    """Values of any size for one scalar proto field."""
    kinds = {
        field.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
        field.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
        field.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
        field.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
        field.TYPE_UINT32: st.integers(0, 2**32 - 1),
        field.TYPE_UINT64: st.integers(0, 2**64 - 1),
        field.TYPE_BOOL: st.booleans(),
        field.TYPE_STRING: st.text(max_size=30),
        field.TYPE_ENUM: st.integers(-3, 12),  # known values and unknown ones
    }
    return kinds.get(field.type, st.none())


@st.composite
def proto_specs(draw: st.DrawFn, message: Any = None, depth: int = 0) -> Any:
    """A SearchSpec (or a nested message) with random values in random fields."""
    message = message if message is not None else common_pb2.SearchSpec()
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == field.TYPE_MESSAGE:
            if depth > 3 or field.message_type.GetOptions().map_entry:
                continue
            if repeated:
                for _ in range(draw(st.integers(0, 3))):
                    draw(proto_specs(getattr(message, field.name).add(), depth + 1))
            else:
                draw(proto_specs(getattr(message, field.name), depth + 1))
            continue
        values = _proto_values(field)
        if repeated:
            getattr(message, field.name).extend(
                v for v in draw(st.lists(values, max_size=4)) if v is not None
            )
        else:
            value = draw(values)
            if value is not None:
                setattr(message, field.name, value)
    return message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto_specs())
def test_any_proto_spec_is_resolved_or_refused_with_a_value_error(
    spec: common_pb2.SearchSpec,
) -> None:
    try:
        _check(spec)
    except ValueError as err:
        assert str(err)


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=120)
    | st.lists(
        st.sampled_from(
            ["stem:8", "head:16", "r1_k3_s11_e1_i8_o8", "r2_k5_s22_e6_i8_o16_se0.25", "act:relu"]
        )
        | st.text(alphabet="rksei_o0123456789.:", max_size=25),
        max_size=6,
    ).map(" ".join)
)
def test_any_block_string_is_decoded_or_refused_with_a_value_error(text: str) -> None:
    try:
        decode(text)
    except ValueError as err:
        assert str(err)


TOKENS = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40).map(lambda t: "T" + t)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS | st.dictionaries(TOKENS | st.integers(), DOCUMENTS, max_size=4))
def test_any_token_file_is_loaded_or_refused_naming_no_token(document: Any) -> None:
    """Tokens here start with "T" followed by hex digits, which nothing else generated
    holds, so an error that contains one shows a token."""
    try:
        Users.from_document(document)
    except ValueError as err:
        if isinstance(document, dict):
            for token in document:
                if isinstance(token, str) and token.startswith("T"):
                    assert token not in str(err)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["authorization", "x-other"]) | st.text(max_size=10),
            st.text(max_size=60) | st.binary(max_size=20),
        ),
        max_size=4,
    )
    | st.none()
)
def test_any_call_metadata_is_a_user_or_none(metadata: Any) -> None:
    users = Users([("a-token-of-sixteen-chars", User("alice"))])
    assert users.from_metadata(metadata) is None


@settings(max_examples=100, deadline=None)
@given(DOCUMENTS)
def test_any_phone_farm_document_is_loaded_or_refused_with_a_value_error(
    tmp_path_factory: pytest.TempPathFactory, document: Any
) -> None:
    from services.latency.phones.profiles import parse_farm_config

    base = tmp_path_factory.getbasetemp()
    try:
        parse_farm_config(document, base_dir=base)
    except ValueError as err:
        assert str(err)


# --- over gRPC, to a real controller -------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workers = InProcessWorkers(instant_training)
    with local_stack(tmp_path_factory.mktemp("bad-input"), workers) as running:
        yield running


def _submit(stack: Stack, spec: common_pb2.SearchSpec) -> grpc.StatusCode:
    with channel(stack.address) as ch:
        stub = controller_pb2_grpc.ControllerStub(ch)
        try:
            stub.SubmitSearch(controller_pb2.SubmitSearchRequest(spec=spec), timeout=30)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def _refused_by_resolve(spec: common_pb2.SearchSpec) -> bool:
    try:
        _check(spec)
    except ValueError:
        return True
    return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto_specs())
def test_a_refused_spec_is_invalid_argument_and_stores_nothing(
    stack: Stack, spec: common_pb2.SearchSpec
) -> None:
    if not _refused_by_resolve(spec):
        return  # valid specs start searches: not this test's subject
    before = len(stack.store.list_searches())
    assert _submit(stack, spec) == grpc.StatusCode.INVALID_ARGUMENT
    assert len(stack.store.list_searches()) == before


def test_a_message_over_the_size_limit_is_refused_and_stores_nothing(stack: Stack) -> None:
    spec = common_pb2.SearchSpec(name="x" * (5 * 2**20))  # past gRPC's 4 MiB default
    assert _submit(stack, spec) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stack.store.list_searches() == []


def test_the_generators_reach_valid_specs_too() -> None:
    """The properties above would prove little if every generated spec failed at once:
    a valid document round-trips through the same path."""
    document = yaml.safe_load(
        "space: {preset: small-images, resolution: 28}\nbudget: {max_trials: 2}\n"
        "objective: {kind: soft, target_latency_seconds: 0.001}\n"
    )
    spec = spec_from_document(document)
    _check(spec)
    assert json_format.MessageToDict(spec)["budget"] == {"maxTrials": 2}
    assert issubclass(InvalidInput, ValueError)
