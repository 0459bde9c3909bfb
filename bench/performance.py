"""Performance benchmark: bottleneck caching against its baselines and this machine's floor.

    python bench/performance.py            # 500 images
    python bench/performance.py --quick    # 150 images

All contenders run in this process on the same images; figures are ratios and rates measured now.
- caching (batched tf.data pipeline) against (a) one image at a time through a compiled graph and
  (b) the standard Keras recipe (image_dataset_from_directory + model.predict);
- the float32 floor: this machine's measured matmul rate divided by the model's FLOPs per image;
- bfloat16 against float32: speed, how far the bottlenecks move, and the stamps test accuracy;
- warm rerun, head training (1,000 steps of batch 100), label_image for one image (a whole
  process) and for a folder.
Writes bench/results/summary.json and performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from bench.caching import make_images, per_image_rate  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def matmul_gflops(dtype, size: int = 2048, seconds: float = 3.0) -> float:
    a = tf.random.uniform((size, size), dtype=tf.float32)
    a = tf.cast(a, dtype)
    product = tf.function(lambda x: tf.matmul(x, x))
    product(a).numpy()
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        product(a).numpy()
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def flops_per_image(model: keras.Model) -> float:
    """Multiply-adds x 2 of the convolutions and dense layers (the rest is negligible)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += flops_per_image(layer)
            continue
        out = layer.output.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * out[-1]
    return float(total)


def cold_rate(backbone, records) -> float:
    with tempfile.TemporaryDirectory() as cache:
        report = tlc.bottlenecks.cache_bottlenecks(records, backbone, cache, progress=False)
    return report.computed / report.seconds


def keras_recipe_rate(backbone, folder: Path, count: int) -> float:
    """image_dataset_from_directory + model.predict, the standard Keras way (resize, no crop)."""
    size = backbone.input_size
    started = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=(size, size), batch_size=32, shuffle=False, verbose=False
    )
    preprocessing = backbone.spec.preprocessing
    dataset = dataset.map(lambda x: (x - preprocessing.offset) / preprocessing.scale)
    vectors = backbone.features.predict(dataset, verbose=0)
    assert len(vectors) == count
    return count / (time.perf_counter() - started)


def stamps_accuracy(backbone, cache) -> tuple[float, dict]:
    dataset = tlc.data.scan_dataset(tlc.datasets.stamps())
    tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, cache, progress=False)
    splits = {s: tlc.train.gather(dataset, s, backbone, cache) for s in tlc.data.SPLITS}
    config = tlc.train.TrainConfig(how_many_training_steps=1000)
    started = time.perf_counter()
    head, _ = tlc.train.train_head(splits["train"], splits["validation"], 5, config, progress=False)
    seconds = time.perf_counter() - started
    return tlc.train.evaluate(head, splits["test"], dataset.class_names).accuracy, {
        "splits": splits,
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 150 if args.quick else 500
    folder = make_images(tlc.config.data_dir() / "bench" / f"images_{count}", count)
    dataset = tlc.data.scan_dataset(folder)
    lite0 = tlc.backbones.load_backbone("efficientnet_lite0")
    lite0_bf16 = lite0.to_bfloat16()
    random_inception = tlc.backbones.Backbone(
        tlc.backbones.REGISTRY["inception_v3"],
        keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3), pooling="avg"),
        "random-weights",
    )

    fp32_gflops, bf16_gflops = matmul_gflops(tf.float32), matmul_gflops(tf.bfloat16)
    rates = {
        "per_image": per_image_rate(lite0, dataset.images, count // 5, compiled=True),
        "keras": keras_recipe_rate(lite0, folder, count),
        "caching": cold_rate(lite0, dataset.images),
        "caching_bf16": cold_rate(lite0_bf16, dataset.images),
        "inception_caching": cold_rate(random_inception, dataset.images[: count // 2]),
    }
    with tempfile.TemporaryDirectory() as cache:
        tlc.bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
        warm = tlc.bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
    lite0_flops, inception_flops = flops_per_image(lite0.features), flops_per_image(random_inception.features)

    with tempfile.TemporaryDirectory() as cache:
        accuracy32, run32 = stamps_accuracy(lite0, cache)
        accuracy16, run16 = stamps_accuracy(lite0_bf16, cache)
    v32, v16 = run32["splits"]["test"].vectors, run16["splits"]["test"].vectors
    bottleneck_shift = float(np.max(np.linalg.norm(v16 - v32, axis=1) / np.linalg.norm(v32, axis=1)))

    model = tlc.course.ensure_retrained_model(steps=200)
    sample = dataset.images[0].path
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "label_image.py"),
            str(sample),
            "--graph",
            str(model["graph"]),
            "--labels",
            str(model["labels"]),
        ],
        check=True,
        capture_output=True,
    )
    label_one_seconds = time.perf_counter() - started
    started = time.perf_counter()
    labelled = tlc.label.label_images([folder], model["graph"], model["labels"])
    label_folder_rate = len(labelled) / (time.perf_counter() - started)

    summary = {
        "images": count,
        "caching_images_per_second": round(rates["caching"], 2),
        "per_image_images_per_second": round(rates["per_image"], 2),
        "keras_recipe_images_per_second": round(rates["keras"], 2),
        "cache_speedup_vs_per_image": round(rates["caching"] / rates["per_image"], 2),
        "cache_speedup_vs_keras": round(rates["caching"] / rates["keras"], 2),
        "matmul_float32_gflops": round(fp32_gflops, 1),
        "matmul_bfloat16_gflops": round(bf16_gflops, 1),
        "efficientnet_lite0_gflops_per_image": round(lite0_flops / 1e9, 3),
        "inception_v3_gflops_per_image": round(inception_flops / 1e9, 3),
        "efficientnet_lite0_fraction_of_floor": round(rates["caching"] / (fp32_gflops * 1e9 / lite0_flops), 3),
        "inception_v3_images_per_second": round(rates["inception_caching"], 2),
        "inception_v3_fraction_of_floor": round(rates["inception_caching"] / (fp32_gflops * 1e9 / inception_flops), 3),
        "warm_speedup": round(len(dataset.images) / rates["caching"] / warm.seconds, 1),
        "bf16_caching_images_per_second": round(rates["caching_bf16"], 2),
        "bf16_speedup": round(rates["caching_bf16"] / rates["caching"], 2),
        "bf16_max_relative_bottleneck_shift": round(bottleneck_shift, 4),
        "stamps_test_accuracy_float32": accuracy32,
        "stamps_test_accuracy_bfloat16": accuracy16,
        "head_training_seconds_1000_steps_batch_100": round(run32["seconds"], 2),
        "label_one_image_process_seconds": round(label_one_seconds, 2),
        "label_folder_images_per_second": round(label_folder_rate, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": tlc.course.environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(f"| {key} | {value} |" for key, value in summary.items() if key != "versions")
    command = "python bench/performance.py" + (" --quick" if args.quick else "")
    (RESULTS / "performance.md").write_text(
        f"# Performance\n\n`{command}`\n\n| measure | value |\n| --- | --- |\n{rows}\n"
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
