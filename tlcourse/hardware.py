"""What this machine computes fast: the precision a backbone runs in, and what runs it, when none is asked for.

bfloat16 halves the work of the backbone only where the hardware has bfloat16 units: Intel's AMX
(``amx_bf16``) or AVX512-BF16 (``avx512_bf16``) on the CPU, or a GPU with bfloat16 tensor cores
(compute capability 8.0 or more: A100, H100, RTX 30xx and later). Elsewhere it is emulated, and
slower than float32 (``bf16_speedup`` in ``bench/results/summary.json``, Lite0 caching against
float32 on LiteRT: 0.2, 0.35, 0.31 and 0.3 in four runs on this project's AMD EPYC).
``bench/precision.py`` measured what it does to accuracy. On a CPU without them, float32
bottlenecks are computed by LiteRT's XNNPACK kernels (``litert_speedup`` over TensorFlow for Lite0
caching: 3.35, 1.66, 1.98 and 2.19 in the same four runs). Whether bfloat16 on AMX beats float32 on
LiteRT is not measured yet.
"""

from __future__ import annotations

from pathlib import Path

BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # as Linux names them in /proc/cpuinfo


def cpu_flags() -> str:
    """The CPU's feature flags as Linux lists them ("" where /proc/cpuinfo cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1] for line in lines if line.split(":")[0].strip() == "flags"), "")


def bfloat16_cpu_unit(flags: str | None = None) -> str | None:
    """The CPU's bfloat16 unit named in ``flags`` (default: this CPU's), or None if it has none."""
    present = set((cpu_flags() if flags is None else flags).split())
    return next((flag for flag in BFLOAT16_CPU_FLAGS if flag in present), None)


def bfloat16_gpus() -> list[str]:
    """The GPUs TensorFlow sees that have bfloat16 tensor cores (compute capability 8.0 or more)."""
    import tensorflow as tf  # here: keeps this module light

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        if tuple(details.get("compute_capability", (0, 0))) >= (8, 0):
            names.append(details.get("device_name", gpu.name))
    return names


def default_precision(flags: str | None = None, gpus: list[str] | None = None) -> tuple[str, str]:
    """``(precision, why)``: bfloat16 on a GPU or CPU with bfloat16 units, float32 elsewhere."""
    gpus = bfloat16_gpus() if gpus is None else gpus
    if gpus:
        return "bfloat16", f"the GPU {gpus[0]} has bfloat16 units"
    unit = bfloat16_cpu_unit(flags)
    if unit:
        return "bfloat16", f"this CPU has bfloat16 units ({unit})"
    return "float32", "this CPU has no bfloat16 units"


def gpus() -> list[str]:
    """The GPUs TensorFlow sees (their device names)."""
    import tensorflow as tf

    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def default_engine(precision: str = "float32", gpu_names: list[str] | None = None) -> tuple[str, str]:
    """``(engine, why)``: what computes bottlenecks (``Backbone.engine``) when none is asked for.

    LiteRT's XNNPACK kernels on a CPU in float32 (faster than TensorFlow's for these networks:
    ``litert_speedup`` in ``bench/results/summary.json``); TensorFlow on a GPU and for bfloat16.
    """
    gpu_names = gpus() if gpu_names is None else gpu_names
    if gpu_names:
        return "tensorflow", f"TensorFlow runs the network on the GPU {gpu_names[0]}"
    if precision != "float32":
        return "tensorflow", f"LiteRT's CPU kernels compute float32, not {precision}"
    return "litert", "LiteRT's XNNPACK kernels run the network on the CPU"
