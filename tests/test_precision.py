"""The precision a backbone runs in when none is asked for, from the CPU's flags (fake ones here)."""

import platform
import sys

import numpy as np
import pytest

from tlcourse import hardware

AMD_EPYC = "fpu vme de pse tsc msr sse sse2 avx avx2 fma bmi2 sha_ni clzero"
XEON_AMX = "fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8 avx512_bf16"
COOPER_LAKE = "fpu sse2 avx2 avx512f avx512_vnni avx512_bf16"


def test_bfloat16_units_are_read_from_the_cpu_flags():
    assert hardware.bfloat16_cpu_unit(AMD_EPYC) is None
    assert hardware.bfloat16_cpu_unit(XEON_AMX) == "amx_bf16"
    assert hardware.bfloat16_cpu_unit(COOPER_LAKE) == "avx512_bf16"
    assert hardware.bfloat16_cpu_unit("") is None
    assert hardware.bfloat16_cpu_unit("xamx_bf16 avx512_bf16x") is None  # whole flags only


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="reads the flags Linux lists for x86-64 CPUs"
)
def test_this_cpu_flags_are_read():
    flags = hardware.cpu_flags()
    assert {"fpu", "sse2"} <= set(flags.split()), flags  # every x86-64 CPU has both
    assert hardware.bfloat16_cpu_unit() == hardware.bfloat16_cpu_unit(flags)


def test_default_precision_says_which_and_why():
    assert hardware.default_precision(AMD_EPYC, gpus=[]) == ("float32", "this CPU has no bfloat16 units")
    precision, why = hardware.default_precision(XEON_AMX, gpus=[])
    assert precision == "bfloat16" and "amx_bf16" in why
    precision, why = hardware.default_precision(AMD_EPYC, gpus=["NVIDIA H200"])
    assert precision == "bfloat16" and "H200" in why


def test_retrain_takes_the_machine_default_unless_told_and_says_why(monkeypatch):
    from tlcourse import retrain

    monkeypatch.setattr(retrain.hardware, "default_precision", lambda: ("bfloat16", "this CPU has bfloat16 units"))
    config = retrain.RetrainConfig.from_args(["--image_dir=images"])
    assert config.chosen_precision() == ("bfloat16", "this CPU has bfloat16 units")
    told = retrain.RetrainConfig.from_args(["--image_dir=images", "--precision=float32"])
    assert told.chosen_precision() == ("float32", "as asked")
    fine_tuning = retrain.RetrainConfig.from_args(["--image_dir=images", "--fine_tune_blocks=1"])
    assert fine_tuning.chosen_precision()[0] == "float32" and "fine-tuning" in fine_tuning.chosen_precision()[1]
    for_phones = retrain.RetrainConfig.from_args(["--image_dir=images", "--output_tflite=model.tflite"])
    assert for_phones.chosen_precision() == ("float32", "a TFLite model computes in float32")


def test_a_bfloat16_run_cannot_export_tflite():
    from tlcourse import retrain

    with pytest.raises(retrain.SettingError, match="^output_tflite: TFLite has no bfloat16 convolutions"):
        retrain.RetrainConfig(image_dir="images", precision="bfloat16", output_tflite="model.tflite")


def test_bottlenecks_cached_in_one_precision_are_never_read_in_the_other(lite0, tmp_path):
    from tests.images_factory import labelled_folder
    from tlcourse.bottlenecks import cache_bottlenecks, load_bottlenecks
    from tlcourse.data import scan_dataset

    images = scan_dataset(labelled_folder(tmp_path / "images", ("a", "b"), 2)).images
    cache = tmp_path / "bottlenecks"
    assert cache_bottlenecks(images, lite0, cache, progress=False).computed == 4
    fast = lite0.to_bfloat16()
    assert load_bottlenecks(images, fast, cache)[0].shape[0] == 0  # nothing of float32's is read as bfloat16
    report = cache_bottlenecks(images, fast, cache, progress=False)
    assert (report.hits, report.computed) == (0, 4)
    assert cache_bottlenecks(images, lite0, cache, progress=False).hits == 4  # and each keeps its own
    float32, bfloat16 = load_bottlenecks(images, lite0, cache)[0], load_bottlenecks(images, fast, cache)[0]
    assert not np.array_equal(float32, bfloat16)
