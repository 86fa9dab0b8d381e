"""Named reference architectures, as published.

The MnasNet strings are those of the official code (tensorflow/tpu,
``models/official/mnasnet/mnasnet_models.py``); MobileNetV2 is Sandler et al. 2018,
table 2, with ReLU6 as published.
"""

from __future__ import annotations

from mnas.arch import Activation, Architecture, decode

__all__ = ["REFERENCES", "get", "names"]

_MNASNET_A1 = (
    "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24 r3_k5_s22_e3_i24_o40_se0.25 "
    "r4_k3_s22_e6_i40_o80 r2_k3_s11_e6_i80_o112_se0.25 r3_k5_s22_e6_i112_o160_se0.25 "
    "r1_k3_s11_e6_i160_o320"
)
_MNASNET_B1 = (
    "r1_k3_s11_e1_i32_o16_noskip r3_k3_s22_e3_i16_o24 r3_k5_s22_e3_i24_o40 "
    "r3_k5_s22_e6_i40_o80 r2_k3_s11_e6_i80_o96 r4_k5_s22_e6_i96_o192 "
    "r1_k3_s11_e6_i192_o320_noskip"
)
_MNASNET_SMALL = (
    "r1_k3_s11_e1_i16_o8 r1_k3_s22_e3_i8_o16 r2_k3_s22_e6_i16_o16 "
    "r4_k5_s22_e6_i16_o32_se0.25 r3_k3_s11_e6_i32_o32_se0.25 "
    "r3_k5_s22_e6_i32_o88_se0.25 r1_k3_s11_e6_i88_o144"
)
# MobileNetV2 stages (t, c, n, s): (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2)
# (6,96,3,1) (6,160,3,2) (6,320,1,1); stem 32, head 1280, 3x3 kernels throughout.
_MOBILENETV2 = (
    "r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24 r3_k3_s22_e6_i24_o32 "
    "r4_k3_s22_e6_i32_o64 r3_k3_s11_e6_i64_o96 r3_k3_s22_e6_i96_o160 "
    "r1_k3_s11_e6_i160_o320"
)

REFERENCES: dict[str, Architecture] = {
    "mnasnet-a1": decode(_MNASNET_A1),
    "mnasnet-b1": decode(_MNASNET_B1),
    "mnasnet-small": decode(_MNASNET_SMALL, stem_filters=8, dropout=0.0),
    "mobilenetv2": decode(_MOBILENETV2, activation=Activation.RELU6),
}


def names() -> list[str]:
    return sorted(REFERENCES)


def get(name: str) -> Architecture:
    """The reference architecture called ``name``; ``ValueError`` lists the known names."""
    try:
        return REFERENCES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(names())})") from None
