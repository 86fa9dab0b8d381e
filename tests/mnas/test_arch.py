"""Block strings and architectures: decoding, encoding, ids, and errors on bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mnas import references
from mnas.arch import (
    Activation,
    Architecture,
    BlockSpec,
    Op,
    Skip,
    decode,
    decode_block,
    encode,
    encode_block,
    round_filters,
)

PUBLISHED = [
    "r1_k3_s11_e1_i32_o16_noskip",
    "r2_k3_s22_e6_i16_o24",
    "r3_k5_s22_e3_i24_o40_se0.25",
    "r4_k3_s22_e6_i40_o80",
    "r2_k3_s11_e6_i80_o112_se0.25",
    "r3_k5_s22_e6_i112_o160_se0.25",
    "r1_k3_s11_e6_i160_o320",
    "r1_k3_s11_e6_i192_o320_noskip",
    "r1_k3_s11_e1_i16_o8",
]


@pytest.mark.parametrize("text", PUBLISHED)
def test_published_block_strings_decode_and_encode_unchanged(text: str) -> None:
    assert encode_block(decode_block(text)) == text


def test_decoded_fields_follow_the_official_meaning() -> None:
    block = decode_block("r3_k5_s22_e3_i24_o40_se0.25")
    assert block == BlockSpec(
        op=Op.MBCONV,
        repeats=3,
        kernel=5,
        stride=2,
        expansion=3,
        input_filters=24,
        output_filters=40,
        se_ratio=0.25,
        skip=Skip.IDENTITY,
    )
    first = decode_block("r1_k3_s11_e1_i32_o16_noskip")
    assert (first.op, first.skip, first.expansion) == (Op.DCONV, Skip.NONE, 1)


def test_extension_tokens_for_regular_conv_and_pooling_skip() -> None:
    block = decode_block("r2_k5_s22_e1_i16_o24_se0.25_conv_poolskip")
    assert (block.op, block.skip, block.se_ratio) == (Op.CONV, Skip.POOL, 0.25)
    assert encode_block(block) == "r2_k5_s22_e1_i16_o24_se0.25_conv_poolskip"
    # Token order does not matter when decoding; encoding is canonical.
    shuffled = decode_block("conv_o24_i16_e1_s22_k5_r2_poolskip_se0.25")
    assert shuffled == block


@pytest.mark.parametrize("name", sorted(references.REFERENCES))
def test_references_round_trip(name: str) -> None:
    arch = references.get(name)
    assert decode(encode(arch)) == arch
    assert decode(arch.canonical).id == arch.id


def test_canonical_form_writes_every_setting() -> None:
    small = references.get("mnasnet-small")
    assert small.canonical.startswith("stem:8 r1_k3_s11_e1_i16_o8 ")
    assert small.canonical.endswith(" head:1280 act:relu dropout:0")
    assert references.get("mobilenetv2").activation is Activation.RELU6
    assert " act:relu6 " in references.get("mobilenetv2").canonical + " "


def test_id_is_stable_and_distinguishes_settings() -> None:
    a1 = references.get("mnasnet-a1")
    # A change of this value means every stored id and cache key changes: do not.
    assert a1.id == "1a70457298853e66"
    assert len({references.get(n).id for n in references.names()}) == len(references.names())
    relu6 = Architecture(blocks=a1.blocks, activation=Activation.RELU6)
    assert relu6.id != a1.id


def test_bare_blocks_take_defaults_then_mnasnet_values() -> None:
    arch = decode("r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24")
    assert (arch.stem_filters, arch.head_filters, arch.activation, arch.dropout) == (
        32,
        1280,
        Activation.RELU,
        0.2,
    )
    arch = decode("stem:16 r1_k3_s11_e1_i16_o16 act:relu6", dropout=0.0)
    assert (arch.stem_filters, arch.activation, arch.dropout) == (16, Activation.RELU6, 0.0)


# Each bad input and the words its message must contain (the bad token or field).
BAD_BLOCKS = [
    ("", "empty"),
    ("r1_k3_s11_e1_i32", "'o'"),
    ("k3_s11_e1_i32_o16", "'r'"),
    ("r1_k3_s11_e1_o16", "'i'"),
    ("r1_k4_s11_e1_i32_o16", "kernel"),
    ("r1_k3_s12_e1_i32_o16", "'s12'"),
    ("r1_k3_s1_e1_i32_o16", "'s1'"),
    ("r1_k3_s11_e1_i32_o16_x5", "'x5'"),
    ("r1_k3_s11_e1_i32_o16_se2", "'se2'"),
    ("r1_k3_s11_e1_i32_o16_sex", "'sex'"),
    ("r0_k3_s11_e1_i32_o16", "repeats"),
    ("r1_k3_s11_e1_i0_o16", "input_filters"),
    ("r1_k3_s11_e2.5_i32_o16", "'e2.5'"),
    ("r1_k3_s11_e6_i32_o16_conv", "'e6'"),
    ("r1_k3_s11_e1_i32_o16_noskip_poolskip", "poolskip"),
    ("r1_k3_s11_e1_i32_o16_noskip_noskip", "'noskip' repeated"),
    ("r1_r2_k3_s11_e1_i32_o16", "'r' repeated"),
    ("r1_k3_s11_e1_i32_o16__", "malformed token ''"),
    ("r_k3_s11_e1_i32_o16", "'r' has no value"),
    ("r1_k3_s55_e1_i32_o16", "stride"),
    ("r1_k3_s33_e1_i32_o16", "stride"),
    ("r1_k13_s11_e1_i32_o16", "kernel"),
    ("r1_k3_s11_e0_i32_o16", "expansion"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_BLOCKS)
def test_malformed_block_strings_raise_value_error_naming_the_problem(
    text: str, needle: str
) -> None:
    with pytest.raises(ValueError) as info:
        decode_block(text)
    assert needle in str(info.value)


BAD_ARCHS = [
    ("", "no block strings"),
    ("stem:32", "no block strings"),
    ("r1_k3_s11_e1_i32_o16 stem:x", "'stem:x'"),
    ("r1_k3_s11_e1_i32_o16 act:gelu", "'act:gelu'"),
    ("r1_k3_s11_e1_i32_o16 dropout:1.5", "dropout"),
    ("r1_k3_s11_e1_i32_o16 width:2", "'width:2'"),
    ("r1_k3_s11_e1_i32_o16 head:8 head:16", "'head' repeated"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_ARCHS)
def test_malformed_architectures_raise_value_error(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        decode(text)
    assert needle in str(info.value)


def test_round_filters_follows_the_official_rule() -> None:
    assert round_filters(32, 1.0) == 32
    assert round_filters(32, 1.4) == 48  # 44.8 -> 48
    assert round_filters(16, 1.4) == 24  # 22.4 -> 24
    assert round_filters(112, 1.4) == 160  # 156.8 -> 160
    assert round_filters(16, 0.5) == 8
    assert round_filters(4, 0.5) == 8  # never below the divisor
    assert round_filters(18, 1.0) == 24  # 16 loses over 10%: add a divisor
    assert round_filters(40, 0.35) == 16  # 14 -> 16


blocks = st.builds(
    lambda op, r, k, s, e, i, o, se, skip: BlockSpec(
        op=op,
        repeats=r,
        kernel=k,
        stride=s,
        expansion=e if op is Op.MBCONV else 1,
        input_filters=i,
        output_filters=o,
        se_ratio=se,
        skip=skip,
    ),
    st.sampled_from(Op),
    st.integers(1, 9),
    st.sampled_from([1, 3, 5, 7]),
    st.integers(1, 2),
    st.integers(2, 12),
    st.integers(1, 2048),
    st.integers(1, 2048),
    st.one_of(st.just(0.0), st.floats(0.01, 1.0, allow_nan=False)),
    st.sampled_from(Skip),
)


@given(
    st.lists(blocks, min_size=1, max_size=9),
    st.integers(1, 128),
    st.integers(1, 4096),
    st.sampled_from(Activation),
    st.floats(0.0, 0.99),
)
def test_any_architecture_round_trips(block_list, stem, head, act, dropout) -> None:
    arch = Architecture(
        blocks=tuple(block_list),
        stem_filters=stem,
        head_filters=head,
        activation=act,
        dropout=dropout,
    )
    assert decode(encode(arch)) == arch
    for block in block_list:
        assert decode_block(encode_block(block)) == block
