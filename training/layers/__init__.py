from training.layers.nsl import (
    LAYER_TYPES,
    DynamicNSLConv2d,
    LowRankDynamicNSLConv2d,
    PlainConv2d,
    SphereConv2d,
    StaticNSLConv2d,
    dns_per_tap,
    dns_stacked_input,
    fold_static_layers,
    make_conv,
)

__all__ = [
    "LAYER_TYPES",
    "DynamicNSLConv2d",
    "LowRankDynamicNSLConv2d",
    "PlainConv2d",
    "SphereConv2d",
    "StaticNSLConv2d",
    "dns_per_tap",
    "dns_stacked_input",
    "fold_static_layers",
    "make_conv",
]
