"""Architectures as data: block specs, whole networks, and their canonical text form.

The block-string format is the one of the official MnasNet code
(``r1_k3_s11_e1_i32_o16_se0.25_noskip``), extended by two optional tokens for what that
format cannot say: ``conv`` (the block is a regular convolution, not a depthwise one) and
``poolskip`` (the pooling shortcut, see :mod:`mnas.layers`). Published strings decode
unchanged, and ``decode(encode(a)) == a`` for every architecture.

A whole architecture's canonical form adds the network-wide settings as ``key:value``
tokens, always written out so that an id never depends on a default::

    stem:32 r1_k3_s11_e1_i32_o16_noskip ... head:1280 act:relu dropout:0.2
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mnas.validation import check_int

__all__ = [
    "Activation",
    "Architecture",
    "BlockSpec",
    "Op",
    "Skip",
    "decode",
    "decode_block",
    "encode",
    "encode_block",
    "round_filters",
]

MAX_KERNEL = 11
MAX_STRIDE = 2


class Op(enum.Enum):
    """The convolution a block is built from."""

    CONV = "conv"  # regular k x k convolution, BN, activation
    DCONV = "dconv"  # depthwise separable: k x k depthwise, BN, act; 1x1 linear projection
    MBCONV = "mbconv"  # inverted bottleneck: 1x1 expansion, depthwise, 1x1 linear projection


class Skip(enum.Enum):
    """The shortcut added around each layer of a block."""

    IDENTITY = "identity"  # residual where stride is 1 and filters match
    POOL = "pool"  # always: average-pool to the stride, 1x1 projection if filters differ
    NONE = "none"


class Activation(enum.Enum):
    RELU = "relu"  # MnasNet
    RELU6 = "relu6"  # MobileNetV2
    HARD_SWISH = "hard_swish"  # x * relu6(x + 3) / 6 (MobileNetV3)


@dataclass(frozen=True)
class BlockSpec:
    """One block: ``repeats`` layers sharing one op; only the first layer strides.

    ``input_filters`` and ``output_filters`` are the unscaled (width 1.0) counts of the
    block string; the width multiplier is applied when a network is built.
    """

    op: Op
    repeats: int
    kernel: int
    stride: int
    expansion: int
    input_filters: int
    output_filters: int
    se_ratio: float = 0.0
    skip: Skip = Skip.IDENTITY

    def __post_init__(self) -> None:
        where = "block"
        check_int(f"{where}.repeats", self.repeats, 1)
        check_int(f"{where}.kernel", self.kernel, 1, MAX_KERNEL)
        if self.kernel % 2 == 0:
            raise ValueError(f"{where}.kernel: must be odd, got {self.kernel}")
        check_int(f"{where}.stride", self.stride, 1, MAX_STRIDE)
        check_int(f"{where}.expansion", self.expansion, 1)
        check_int(f"{where}.input_filters", self.input_filters, 1)
        check_int(f"{where}.output_filters", self.output_filters, 1)
        if not isinstance(self.op, Op):
            raise ValueError(f"{where}.op: expected an Op, got {self.op!r}")
        if not isinstance(self.skip, Skip):
            raise ValueError(f"{where}.skip: expected a Skip, got {self.skip!r}")
        if isinstance(self.se_ratio, bool) or not isinstance(self.se_ratio, (int, float)):
            raise ValueError(f"{where}.se_ratio: expected a number, got {self.se_ratio!r}")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ValueError(f"{where}.se_ratio: must be in [0, 1], got {self.se_ratio}")
        if self.op is Op.MBCONV and self.expansion == 1:
            raise ValueError(f"{where}.expansion: mbconv needs expansion > 1 (e1 is dconv)")
        if self.op in (Op.CONV, Op.DCONV) and self.expansion != 1:
            raise ValueError(
                f"{where}.expansion: {self.op.value} has no expansion, got e{self.expansion}"
            )

    @property
    def has_se(self) -> bool:
        return self.se_ratio > 0

    def __str__(self) -> str:
        return encode_block(self)


@dataclass(frozen=True)
class Architecture:
    """A whole network: stem, blocks, head and the network-wide settings.

    Width multiplier, input resolution and number of classes are build parameters, not
    part of the architecture (one architecture, many deployments).
    """

    blocks: tuple[BlockSpec, ...]
    stem_filters: int = 32
    head_filters: int = 1280
    activation: Activation = Activation.RELU
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, tuple):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ValueError("blocks: an architecture needs at least one block")
        for i, block in enumerate(self.blocks):
            if not isinstance(block, BlockSpec):
                raise ValueError(f"blocks[{i}]: expected a BlockSpec, got {block!r}")
        check_int("stem_filters", self.stem_filters, 1)
        check_int("head_filters", self.head_filters, 1)
        if not isinstance(self.activation, Activation):
            raise ValueError(f"activation: expected an Activation, got {self.activation!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout: expected a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    @property
    def canonical(self) -> str:
        """The canonical text form: the id on the wire and the cache key."""
        return encode(self)

    @property
    def id(self) -> str:
        """A stable 16-hex-digit id: the SHA-256 of the canonical form, truncated."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:16]

    @property
    def num_layers(self) -> int:
        return sum(b.repeats for b in self.blocks)

    def __str__(self) -> str:
        return self.canonical


def round_filters(filters: int, width: float = 1.0, divisor: int = 8) -> int:
    """Scale ``filters`` by ``width`` to a multiple of ``divisor``, losing at most 10%.

    The rule of the official MnasNet code: round to the nearest multiple of ``divisor``
    (never below ``divisor``), and add ``divisor`` more when rounding lost over 10%.
    As in the official code this applies at width 1.0 too, so counts that are not a
    multiple of ``divisor`` are rounded even then.
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


# --- block strings ----------------------------------------------------------------------

_TOKEN = re.compile(r"^([a-z]+)(.*)$")
_FLAGS = {"noskip", "poolskip", "conv"}
_VALUED = {"r", "k", "s", "e", "i", "o", "se"}
_REQUIRED = ("r", "k", "s", "e", "i", "o")
_NAMES = {
    "r": "repeats",
    "k": "kernel",
    "s": "stride",
    "e": "expansion",
    "i": "input filters",
    "o": "output filters",
}


def decode_block(text: str) -> BlockSpec:
    """Decode one block string; raise ``ValueError`` naming the bad token."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"block string: empty or not a string: {text!r}")
    text = text.strip()
    values: dict[str, str] = {}
    flags: set[str] = set()
    for token in text.split("_"):
        match = _TOKEN.match(token)
        if match is None:
            raise ValueError(f"block {text!r}: malformed token {token!r}")
        key, value = match.groups()
        if key in _FLAGS and value == "":
            if key in flags:
                raise ValueError(f"block {text!r}: token {token!r} repeated")
            flags.add(key)
            continue
        if key not in _VALUED:
            known = ", ".join(sorted(_VALUED | _FLAGS))
            raise ValueError(f"block {text!r}: unknown token {token!r} (known: {known})")
        if key in values:
            raise ValueError(f"block {text!r}: token {key!r} repeated ({token!r})")
        if value == "":
            raise ValueError(f"block {text!r}: token {token!r} has no value")
        values[key] = value
    for key in _REQUIRED:
        if key not in values:
            raise ValueError(f"block {text!r}: missing token {key!r} ({_NAMES[key]})")
    if "noskip" in flags and "poolskip" in flags:
        raise ValueError(f"block {text!r}: tokens 'noskip' and 'poolskip' exclude each other")

    repeats = _int_token(text, "r", values["r"])
    kernel = _int_token(text, "k", values["k"])
    stride_text = values["s"]
    if not re.fullmatch(r"\d\d", stride_text) or stride_text[0] != stride_text[1]:
        raise ValueError(
            f"block {text!r}: token 's{stride_text}' must be two equal digits such as s11 or s22"
        )
    stride = int(stride_text[0])
    expansion = _int_token(text, "e", values["e"])
    input_filters = _int_token(text, "i", values["i"])
    output_filters = _int_token(text, "o", values["o"])
    se_ratio = 0.0
    if "se" in values:
        try:
            se_ratio = float(values["se"])
        except ValueError:
            raise ValueError(f"block {text!r}: token 'se{values['se']}' is not a number") from None
        if not 0.0 < se_ratio <= 1.0:
            raise ValueError(f"block {text!r}: token 'se{values['se']}' must be in (0, 1]")

    if "conv" in flags:
        if expansion != 1:
            raise ValueError(f"block {text!r}: token 'e{expansion}': a 'conv' block needs e1")
        op = Op.CONV
    else:
        op = Op.DCONV if expansion == 1 else Op.MBCONV
    skip = Skip.NONE if "noskip" in flags else Skip.POOL if "poolskip" in flags else Skip.IDENTITY
    try:
        return BlockSpec(
            op=op,
            repeats=repeats,
            kernel=kernel,
            stride=stride,
            expansion=expansion,
            input_filters=input_filters,
            output_filters=output_filters,
            se_ratio=se_ratio,
            skip=skip,
        )
    except ValueError as err:
        raise ValueError(f"block {text!r}: {err}") from None


def encode_block(block: BlockSpec) -> str:
    """The canonical block string (official token order, then our extensions)."""
    tokens = [
        f"r{block.repeats}",
        f"k{block.kernel}",
        f"s{block.stride}{block.stride}",
        f"e{block.expansion}",
        f"i{block.input_filters}",
        f"o{block.output_filters}",
    ]
    if block.has_se:
        tokens.append(f"se{_number(block.se_ratio)}")
    if block.op is Op.CONV:
        tokens.append("conv")
    if block.skip is Skip.NONE:
        tokens.append("noskip")
    elif block.skip is Skip.POOL:
        tokens.append("poolskip")
    return "_".join(tokens)


# --- whole architectures ------------------------------------------------------------------

_SETTING_KEYS = ("stem", "head", "act", "dropout")


def encode(arch: Architecture) -> str:
    """The canonical form: ``stem:S <blocks> head:H act:A dropout:D``."""
    parts = [f"stem:{arch.stem_filters}"]
    parts += [encode_block(b) for b in arch.blocks]
    parts += [
        f"head:{arch.head_filters}",
        f"act:{arch.activation.value}",
        f"dropout:{_number(arch.dropout)}",
    ]
    return " ".join(parts)


def decode(text: str | Iterable[str], **defaults: object) -> Architecture:
    """Decode a canonical form, or bare block strings completed by ``defaults``.

    ``text`` is whitespace-separated tokens: block strings and optional ``key:value``
    settings (``stem``, ``head``, ``act``, ``dropout``). Settings missing from the text
    take ``defaults`` (Architecture field names), then the MnasNet values.
    """
    tokens = text.split() if isinstance(text, str) else [t for s in text for t in s.split()]
    if not tokens:
        raise ValueError("architecture: no block strings given")
    blocks: list[BlockSpec] = []
    settings: dict[str, str] = {}
    for token in tokens:
        if ":" in token:
            key, _, value = token.partition(":")
            if key not in _SETTING_KEYS:
                known = ", ".join(_SETTING_KEYS)
                raise ValueError(f"architecture: unknown setting {token!r} (known: {known})")
            if key in settings:
                raise ValueError(f"architecture: setting {key!r} repeated ({token!r})")
            settings[key] = value
        else:
            blocks.append(decode_block(token))
    fields: dict[str, object] = dict(defaults)
    if "stem" in settings:
        fields["stem_filters"] = _int_setting("stem", settings["stem"])
    if "head" in settings:
        fields["head_filters"] = _int_setting("head", settings["head"])
    if "act" in settings:
        try:
            fields["activation"] = Activation(settings["act"])
        except ValueError:
            known = ", ".join(a.value for a in Activation)
            raise ValueError(
                f"architecture: setting 'act:{settings['act']}' unknown (known: {known})"
            ) from None
    if "dropout" in settings:
        try:
            fields["dropout"] = float(settings["dropout"])
        except ValueError:
            raise ValueError(
                f"architecture: setting 'dropout:{settings['dropout']}' is not a number"
            ) from None
    if not blocks:
        raise ValueError("architecture: no block strings given")
    return Architecture(blocks=tuple(blocks), **fields)  # type: ignore[arg-type]


# --- helpers ---------------------------------------------------------------------------


def _int_token(text: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"block {text!r}: token '{key}{value}' needs a whole number")
    return int(value)


def _int_setting(key: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"architecture: setting '{key}:{value}' needs a whole number")
    return int(value)


def _number(value: float) -> str:
    """Shortest text that reads back as the same float (``0.25``, ``0``, ``0.2``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
