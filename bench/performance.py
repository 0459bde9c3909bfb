"""Performance benchmark: caching and labelling against their baselines and this machine's floor.

    python bench/performance.py            # the full run (30 minutes on 2 cores)
    python bench/performance.py --quick    # fewer images and rounds, for a fast check (6 minutes)
    python bench/performance.py --part label_one_image   # only label_image.py on one photo (a few minutes)

Contenders run in this process on the same images, in interleaved rounds; each keeps its best
round (a shared machine only ever slows a run down). Two image sets:
- small: 1,000 JPEGs of about 160x160 (crops of the stamps photos, like the course's datasets);
- camera: 96 phone-sized 4032x3024 JPEGs (what a practitioner points the tool at), in 2 more
  rounds than the small images: their rounds are short, and the machine moves them most.
For EfficientNet-Lite0 and Inception-v3 (random weights: the speed is the same), cold caching
in this machine's default precision and engine (``tlcourse.hardware``) against (a) one image at
a time as retrain.py did it (decode and resize in a graph, one forward pass, the bottleneck
written as a text file) and (b) the standard Keras recipe (``image_dataset_from_directory`` +
``model.predict``), both in float32 on TensorFlow. What was tried to close the gap, each with
its figure: the other engine (LiteRT's XNNPACK kernels or TensorFlow's), TensorFlow's JPEG
decoder for plain JPEGs against Pillow for every file (``caching_pillow_only``), the cache files
written on a second thread against inline (``caching_writes_inline``), XLA compilation of the
network (``caching_xla``), the other precision, and thread settings (each in its own process).
The floor: this machine's best TensorFlow matmul rate over several sizes and shapes, in the
default precision, divided into the model's FLOPs per image. Also: how far bfloat16 moves
bottlenecks, warm rerun, head training, label_image for one image (a whole process: today's way
without TensorFlow against the TensorFlow way it replaced, in the same rounds) and for a folder of
1,000. Peak memory is each contender's own high-water mark. ``targets`` says which of the course's
speed targets this run meets (caching 1.5x the Keras recipe on small images and on camera photos,
Lite0 caching at 0.6 of the floor, a folder labelled at 0.9 of the caching rate, one image
labelled 5x faster than through TensorFlow). Writes bench/results/summary.json, performance.md and
performance.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from bench.images import make_images  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CAMERA_SIZE = (4032, 3024)


def memory_mb(field: str) -> float | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (its high-water mark) of this process, from Linux's /proc."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next(float(line.split()[1]) / 1024 for line in lines if line.startswith(field))


def reset_peak_memory() -> float | None:
    """Restart the high-water mark at the resident set now (Linux); returns that resident set."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return memory_mb("VmRSS")


# (rows, inner, columns): square ones, and the tall thin ones a convolution on a batch of images turns into.
MATMUL_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (3072, 3072, 3072), (50176, 96, 96), (12544, 384, 384))


def matmul_gflops(dtype, shape: tuple[int, int, int], seconds: float = 1.0) -> float:
    rows, inner, columns = shape
    a = tf.cast(tf.random.uniform((rows, inner)), dtype)
    b = tf.cast(tf.random.uniform((inner, columns)), dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        product(a, b).numpy()
        count += 1
    return 2 * rows * inner * columns * count / (time.perf_counter() - started) / 1e9


def matmul_peak(dtype, rounds: int) -> dict:
    """The best matmul rate of several sizes and shapes (one size alone underestimates the peak)."""
    rates = {shape: max(matmul_gflops(dtype, shape) for _ in range(rounds)) for shape in MATMUL_SHAPES}
    best = max(rates, key=rates.get)
    return {
        "gflops": rates[best],
        "shape": "x".join(map(str, best)),
        "by_shape": {"x".join(map(str, k)): round(v, 1) for k, v in rates.items()},
    }


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


def caching(backbone, records, **options) -> int:
    """The course's way: ``cache_bottlenecks`` into a fresh cache (``options``: of ``CachingOptions``).
    Returns the images done."""
    options = tlc.bottlenecks.CachingOptions(**options)
    with tempfile.TemporaryDirectory() as cache:
        report = tlc.bottlenecks.cache_bottlenecks(records, backbone, cache, progress=False, options=options)
    assert not report.failures
    return report.computed


def on_engine(backbone, engine: str):
    """The same float32 backbone (the same network object) with its bottlenecks computed by ``engine``."""
    return tlc.backbones.Backbone(backbone.spec, backbone.network, backbone.weights_digest, engine=engine)


def tensorflow_graph(backbone):
    """The network as one TensorFlow graph, for any batch size: how the baselines run it."""
    spec = tf.TensorSpec([None, backbone.input_size, backbone.input_size, 3], tf.float32)
    return tf.function(lambda images: backbone.network(images, training=False), input_signature=[spec])


def network_only(backbone, count: int, batch_size: int = 32) -> int:
    """The network alone on ready-made batches, on the backbone's engine: the most any pipeline around it can do."""
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, backbone.input_size, backbone.input_size, 3))
    batch = batch.astype(np.float32)
    for _ in range(max(1, count // batch_size)):
        backbone.run_network(batch)
    return max(1, count // batch_size) * batch_size


def retrain_py_decoder(backbone):
    """retrain.py's decoding graph: the whole JPEG decoded, resized (bilinear) to the input size, scaled."""
    size, preprocessing = backbone.input_size, backbone.spec.preprocessing

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode_and_resize(data):
        image = tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32)[None]
        return (tf.image.resize(image, (size, size), "bilinear") - preprocessing.offset) / preprocessing.scale

    return decode_and_resize


def retrain_py_way(network, decode_and_resize, records) -> int:
    """retrain.py's loop: per image, read the JPEG, decode and resize it in one graph call, run the
    model on it alone in another (its two ``session.run``s), write the bottleneck as comma-separated text."""
    with tempfile.TemporaryDirectory() as bottleneck_dir:
        for index, record in enumerate(records):
            image = decode_and_resize(tf.constant(Path(record.path).read_bytes()))
            values = np.squeeze(network(image).numpy())
            Path(bottleneck_dir, f"{index}.txt").write_text(",".join(str(x) for x in values))
    return len(records)


def keras_recipe(backbone, folder: Path) -> int:
    """``image_dataset_from_directory`` + ``model.predict``: the standard Keras way (resize, no crop)."""
    size, preprocessing = backbone.input_size, backbone.spec.preprocessing
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=(size, size), batch_size=32, shuffle=False, verbose=False
    )
    dataset = dataset.map(lambda x: (x - preprocessing.offset) / preprocessing.scale)
    return len(backbone.network.predict(dataset, verbose=0))


def labelling(model: dict, folder: Path) -> int:
    results = tlc.label.label_images([folder], model["graph"], model["labels"])
    assert not any(result.error for result in results)
    return len(results)


def cpu_seconds() -> float:
    """Processor time of this process, all threads: steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_of(rounds: int, contenders: dict) -> dict:
    """Run every contender (name -> function returning images done) once a round, interleaved;
    keep each one's best rate, its least processor time per image and the most memory it added, and
    every round's rate (``rounds``: how much the machine moved them)."""
    for run in contenders.values():  # build and compile outside the timing
        run(warm_up=True)
    best = {
        name: {"images_per_second": 0.0, "cpu_ms_per_image": None, "peak_memory_added_mb": None, "rounds": []}
        for name in contenders
    }
    for round_number in range(rounds):
        for name, run in contenders.items():
            start_memory = reset_peak_memory()
            started, started_cpu = time.perf_counter(), cpu_seconds()
            images = run(warm_up=False)
            rate = images / (time.perf_counter() - started)
            cpu_ms = 1000 * (cpu_seconds() - started_cpu) / images
            print(f"round {round_number + 1}: {name}: {rate:.1f} images/s, {cpu_ms:.1f} CPU ms/image", flush=True)
            figures = best[name]
            figures["rounds"].append(round(rate, 2))
            figures["images_per_second"] = round(max(figures["images_per_second"], rate), 2)
            figures["cpu_ms_per_image"] = round(min(figures["cpu_ms_per_image"] or cpu_ms, cpu_ms), 2)
            if start_memory is not None:
                added = round(memory_mb("VmHWM") - start_memory)
                figures["peak_memory_added_mb"] = max(figures["peak_memory_added_mb"] or 0, added)
    return best


def with_xla(backbone):
    """The same backbone on TensorFlow with its network compiled by XLA (``jit_compile=True``)."""
    return tlc.backbones.Backbone(
        backbone.spec,
        backbone.network,
        backbone.weights_digest,
        precision=backbone.precision,
        engine="tensorflow",
        jit_compile=True,
    )


def contenders_for(
    backbone, folder: Path, per_image_share: int, default_precision: str, variants: bool = False
) -> dict:
    """Name -> run(warm_up) for the images in ``folder``; the slow ones (retrain.py's way and XLA) get
    ``1/per_image_share`` of them.

    ``backbone`` is float32; the baselines run its network on TensorFlow, the course's caching runs in
    ``default_precision`` on the default engine (``tlcourse.hardware``). ``variants`` adds what was
    tried to close the gap: the other engine, the other precision, Pillow decoding every image, and
    XLA compilation of the network.
    """
    records = tlc.data.scan_dataset(folder).images
    share = records[: len(records) // per_image_share]
    decoder, network = retrain_py_decoder(backbone), tensorflow_graph(backbone)
    warm_up_folder = tlc.datasets.stamps() / "fruit"
    engine, _ = tlc.hardware.default_engine(default_precision)
    precisions = {"float32": on_engine(backbone, engine), "bfloat16": backbone.to_bfloat16()}
    default = precisions[default_precision]

    def caching_with(chosen, images=records, **options):
        return lambda warm_up: caching(chosen, images[:2] if warm_up else images, **options)

    contenders = {
        "caching": caching_with(default),
        "retrain_py": lambda warm_up: retrain_py_way(network, decoder, share[:2] if warm_up else share),
        "keras_recipe": lambda warm_up: keras_recipe(backbone, warm_up_folder if warm_up else folder),
        "network_only": lambda warm_up: network_only(default, 32 if warm_up else len(records)),
        "caching_pillow_only": caching_with(default, tensorflow_jpeg=False),
    }
    if variants:
        contenders["caching_writes_inline"] = caching_with(default, write_behind=False)
        other = "float32" if default_precision == "bfloat16" else "bfloat16"
        contenders[f"caching_{other}"] = caching_with(precisions[other])
        contenders["caching_xla"] = caching_with(with_xla(default), share)
        for name in tlc.backbones.ENGINES:
            if name != default.engine:
                contenders[f"caching_{name}"] = caching_with(on_engine(backbone, name))
    return contenders


def threads_child(inter: int, intra: int, folder: Path) -> int:
    """(In a fresh process: TensorFlow reads its thread settings once.) Caching rate with these settings."""
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    precision, _ = tlc.hardware.default_precision()
    backbone = tlc.backbones.load_backbone("efficientnet_lite0", precision=precision)
    records = tlc.data.scan_dataset(folder).images
    caching(backbone, records[:2])
    rate = 0.0
    for _ in range(2):
        started = time.perf_counter()
        rate = max(rate, caching(backbone, records) / (time.perf_counter() - started))
    print(json.dumps({"images_per_second": round(rate, 2)}))
    return 0


THREAD_SETTINGS = ((0, 0), (1, 2), (2, 2), (2, 1), (1, 1))  # (inter-op, intra-op); 0: TensorFlow chooses


def thread_settings(folder: Path) -> dict:
    """Caching rate for each (inter-op, intra-op) thread setting, each in its own process."""
    rates = {}
    for inter, intra in THREAD_SETTINGS:
        command = [sys.executable, __file__, "--threads_child", str(inter), str(intra), str(folder)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rates[f"inter {inter}, intra {intra}"] = json.loads(output.strip().splitlines()[-1])["images_per_second"]
        print(f"threads inter {inter}, intra {intra}: {rates[f'inter {inter}, intra {intra}']} images/s", flush=True)
    return rates


def stamps_run(backbone, cache) -> dict:
    dataset = tlc.data.scan_dataset(tlc.datasets.stamps())
    tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, cache, progress=False)  # not part of the time
    recipe = tlc.pipeline.HeadRecipe("tutorial", tlc.train.TrainConfig(how_many_training_steps=1000))
    started = time.perf_counter()
    trained = tlc.pipeline.run(recipe, dataset, backbone, cache, progress=False)  # gathers the cached splits, trains
    seconds = time.perf_counter() - started
    accuracy = trained.evaluate("test").accuracy
    return {"accuracy": accuracy, "test_vectors": trained.splits["test"].vectors, "seconds": seconds}


def label_one_image(model: dict, image: Path, rounds: int) -> dict:
    """``label_image.py IMAGE`` as a whole process, best of ``rounds`` interleaved, in seconds, and the speed-up.

    - ``tensorflow``: the frozen graph through TensorFlow, as every run did before (no kept conversion);
    - ``kept_litert``: the same graph once its LiteRT conversion is kept (a folder was labelled): no TensorFlow;
    - ``tflite``: the model's ``.tflite`` file: no TensorFlow.
    """
    import keras

    with tempfile.TemporaryDirectory() as work:
        homes = {"tensorflow": Path(work, "no_kept"), "kept_litert": Path(work, "kept"), "tflite": Path(work, "tflite")}
        tflite_path = Path(work, "model.tflite")
        tlc.tflite.write_tflite(keras.models.load_model(model["keras"]), tflite_path)
        graphs = {"tensorflow": model["graph"], "kept_litert": model["graph"], "tflite": tflite_path}

        def command(name: str, images) -> list[str]:
            return [sys.executable, str(ROOT / "label_image.py"), *map(str, images), f"--graph={graphs[name]}",
                    f"--labels={model['labels']}"]  # fmt: skip

        def run(name: str, images) -> float:
            started = time.perf_counter()
            env = {**os.environ, "TLCOURSE_HOME": str(homes[name])}
            subprocess.run(command(name, images), check=True, env=env, stdout=subprocess.DEVNULL)
            return time.perf_counter() - started

        run("kept_litert", [tlc.datasets.stamps()])  # a folder: the conversion is made and kept
        for name in graphs:  # a warm-up: files in the page cache for all alike
            run(name, [image])
        best = dict.fromkeys(graphs, float("inf"))
        for _ in range(rounds):  # interleaved: each keeps its best
            for name in graphs:
                best[name] = min(best[name], run(name, [image]))
    return {
        **{f"label_one_image_{name}_process_seconds": round(seconds, 2) for name, seconds in best.items()},
        "label_one_image_speedup": round(best["tensorflow"] / best["kept_litert"], 2),
        "label_one_image_tflite_speedup": round(best["tensorflow"] / best["tflite"], 2),
    }


def label_one_image_part(rounds: int) -> int:
    """``--part label_one_image``: only ``label_one_image``, written to bench/results/label_one_image.json."""
    work = tlc.config.data_dir() / "bench"
    image = next(make_images(work / "images_200", 200).rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as run_dir:
        figures = label_one_image(tlc.course.ensure_retrained_model(run_dir=run_dir, steps=200), image, rounds)
    figures = {**figures, "rounds": rounds, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_one_image.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


def plot(results: dict, floors: dict, path: Path, precision: str) -> None:
    """One panel per backbone and image set: each contender's images per second, and the floor."""
    colours = {
        "caching": "tab:green",
        "caching_bfloat16": "tab:olive",
        "caching_tensorflow": "tab:cyan",
        "label_image_folder": "tab:blue",
        "network_only": "lightgrey",
    }
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for axis, (panel, contenders) in zip(axes.flat, results.items(), strict=True):
        names = list(contenders)
        axis.bar(
            names,
            [contenders[name]["images_per_second"] for name in names],
            color=[colours.get(name, "tab:grey") for name in names],
        )
        axis.axhline(
            floors[panel.split(", ")[0]],
            color="tab:red",
            linestyle="--",
            label=f"{precision} floor (TensorFlow's best matmul rate over the FLOPs)",
        )
        axis.set_title(panel, fontsize=10)
        axis.set_ylabel("images per second")
        axis.tick_params(axis="x", labelrotation=20, labelsize=8)
        axis.legend(fontsize=8)
    figure.suptitle("Cold bottleneck caching and labelling (best of the rounds; higher is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each contender keeps its best)")
    parser.add_argument("--threads_child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["label_one_image"], help="run only this part (its own results file)")
    args = parser.parse_args()
    if args.threads_child:
        inter, intra, folder = args.threads_child
        return threads_child(int(inter), int(intra), Path(folder))
    if args.part == "label_one_image":
        return label_one_image_part(args.rounds)
    started = time.perf_counter()
    rounds, small_count, camera_count = (1, 200, 16) if args.quick else (args.rounds, 1000, 96)
    camera_rounds = rounds if args.quick else rounds + 2  # short rounds, whose rates the machine moves most
    precision, why = tlc.hardware.default_precision()
    engine, engine_why = tlc.hardware.default_engine(precision)
    print(f"default precision: {precision} ({why}); engine: {engine} ({engine_why})", flush=True)
    work = tlc.config.data_dir() / "bench"
    small = make_images(work / f"images_{small_count}", small_count)
    camera = make_images(work / f"camera_{camera_count}", camera_count, size=CAMERA_SIZE)

    lite0 = tlc.backbones.load_backbone("efficientnet_lite0", engine="tensorflow")  # contenders pick their engine
    inception = tlc.backbones.Backbone(
        tlc.backbones.REGISTRY["inception_v3"],
        keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3), pooling="avg"),
        "random-weights",
    )
    peaks = {dtype: matmul_peak(getattr(tf, dtype), rounds) for dtype in ("float32", "bfloat16")}
    matmul = {dtype: peak["gflops"] for dtype, peak in peaks.items()}
    flops = {"efficientnet_lite0": flops_per_image(lite0.network), "inception_v3": flops_per_image(inception.network)}
    floors = {name: matmul[precision] * 1e9 / value for name, value in flops.items()}  # for the default precision

    few = make_images(work / f"images_{small_count // 8}", small_count // 8)  # Inception is 15x slower
    threads = thread_settings(few)
    results = {
        "efficientnet_lite0, small": contenders_for(lite0, small, 5, precision, variants=True),
        "inception_v3, small": contenders_for(inception, few, 2, precision, variants=True),
        "efficientnet_lite0, camera": contenders_for(lite0, camera, 2, precision),
        "inception_v3, camera": contenders_for(inception, camera, 4, precision),
    }
    with tempfile.TemporaryDirectory() as run_dir:
        model = tlc.course.ensure_retrained_model(run_dir=run_dir, steps=200)
        results["efficientnet_lite0, small"]["label_image_folder"] = lambda warm_up: labelling(
            model,
            tlc.datasets.stamps() if warm_up else small,  # 119 images: enough to convert it for LiteRT
        )
        results = {
            panel: best_of(camera_rounds if "camera" in panel else rounds, contenders)
            for panel, contenders in results.items()
        }
        label_one = label_one_image(model, next(small.rglob("*.jpg")), rounds)

    records = tlc.data.scan_dataset(small).images
    default = on_engine(lite0, engine) if precision == "float32" else lite0.to_bfloat16()
    with tempfile.TemporaryDirectory() as cache:
        cold = tlc.bottlenecks.cache_bottlenecks(records, default, cache, progress=False)
        warm = min(tlc.bottlenecks.cache_bottlenecks(records, default, cache, progress=False).seconds for _ in range(3))
    with tempfile.TemporaryDirectory() as cache:
        run32, run16 = stamps_run(lite0, cache), stamps_run(lite0.to_bfloat16(), cache)
    v32, v16 = run32["test_vectors"], run16["test_vectors"]
    shifts = np.linalg.norm(v16 - v32, axis=1) / np.linalg.norm(v32, axis=1)

    def rate(panel, name):
        return results[panel][name]["images_per_second"]

    def ratio(panel, name, baseline):
        return round(rate(panel, name) / rate(panel, baseline), 2)

    def cpu_ratio(panel, name, baseline):  # how many times less processor time an image takes
        figures = results[panel]
        return round(figures[baseline]["cpu_ms_per_image"] / figures[name]["cpu_ms_per_image"], 2)

    def caching_in(dtype):
        return "caching" if dtype == precision else f"caching_{dtype}"

    def caching_on(name):  # the float32 caching on engine ``name``
        if precision == "float32":
            return "caching" if name == engine else f"caching_{name}"
        return "caching_float32" if name == "tensorflow" else f"caching_{name}"  # bfloat16 runs on TensorFlow

    def target(value, at_least):
        return {"measured": value, "target": at_least, "met": value >= at_least}

    headline, camera_panel = "efficientnet_lite0, small", "efficientnet_lite0, camera"
    fraction_of_floor = round(rate(headline, "caching") / floors["efficientnet_lite0"], 3)
    per_image_ceiling = round(floors["efficientnet_lite0"] / rate(headline, "retrain_py"), 2)
    summary = {
        "default_precision": precision,
        "default_precision_why": why,
        "default_engine": engine,
        "default_engine_why": engine_why,
        "caching_images_per_second": rate(headline, "caching"),
        "cache_speedup_vs_per_image": ratio(headline, "caching", "retrain_py"),
        "cache_speedup_vs_keras": ratio(headline, "caching", "keras_recipe"),
        "cache_speedup_vs_per_image_ceiling": per_image_ceiling,
        "cache_fraction_of_per_image_ceiling": round(ratio(headline, "caching", "retrain_py") / per_image_ceiling, 2),
        "cache_speedup_vs_keras_ceiling": ratio(headline, "network_only", "keras_recipe"),
        "cache_cpu_time_ratio_vs_per_image": cpu_ratio(headline, "caching", "retrain_py"),
        "cache_cpu_time_ratio_vs_keras": cpu_ratio(headline, "caching", "keras_recipe"),
        "camera_cache_cpu_time_ratio_vs_keras": cpu_ratio("efficientnet_lite0, camera", "caching", "keras_recipe"),
        "camera_cache_speedup_vs_per_image": ratio(camera_panel, "caching", "retrain_py"),
        "camera_cache_speedup_vs_keras": ratio(camera_panel, "caching", "keras_recipe"),
        "inception_v3_cache_speedup_vs_per_image": ratio("inception_v3, small", "caching", "retrain_py"),
        "inception_v3_cache_speedup_vs_keras": ratio("inception_v3, small", "caching", "keras_recipe"),
        "inception_v3_camera_cache_speedup_vs_keras": ratio("inception_v3, camera", "caching", "keras_recipe"),
        "matmul_float32_gflops": round(matmul["float32"], 1),
        "matmul_bfloat16_gflops": round(matmul["bfloat16"], 1),
        "efficientnet_lite0_gflops_per_image": round(flops["efficientnet_lite0"] / 1e9, 3),
        "inception_v3_gflops_per_image": round(flops["inception_v3"] / 1e9, 3),
        "efficientnet_lite0_floor_images_per_second": round(floors["efficientnet_lite0"], 1),
        "inception_v3_floor_images_per_second": round(floors["inception_v3"], 1),
        "matmul_peak_shape": {dtype: peak["shape"] for dtype, peak in peaks.items()},
        "matmul_gflops_by_shape": {dtype: peak["by_shape"] for dtype, peak in peaks.items()},
        "efficientnet_lite0_fraction_of_floor": fraction_of_floor,
        "inception_v3_fraction_of_floor": round(rate("inception_v3, small", "caching") / floors["inception_v3"], 3),
        "warm_speedup": round(cold.seconds / warm, 1),
        "bf16_speedup": ratio(headline, caching_in("bfloat16"), caching_in("float32")),
        "inception_v3_bf16_speedup": ratio("inception_v3, small", caching_in("bfloat16"), caching_in("float32")),
        "tensorflow_jpeg_speedup": ratio(headline, "caching", "caching_pillow_only"),
        "camera_tensorflow_jpeg_speedup": ratio(camera_panel, "caching", "caching_pillow_only"),
        "write_behind_speedup": ratio(headline, "caching", "caching_writes_inline"),
        "xla_speedup": ratio(headline, "caching_xla", "caching"),
        "litert_speedup": ratio(headline, caching_on("litert"), caching_on("tensorflow")),
        "inception_v3_litert_speedup": ratio("inception_v3, small", caching_on("litert"), caching_on("tensorflow")),
        "inception_v3_xla_speedup": ratio("inception_v3, small", "caching_xla", "caching"),
        "thread_settings_images_per_second": threads,
        "bf16_max_relative_bottleneck_shift": round(float(shifts.max()), 4),
        "bf16_mean_relative_bottleneck_shift": round(float(shifts.mean()), 4),
        "stamps_test_accuracy_float32": round(run32["accuracy"], 4),
        "stamps_test_accuracy_bfloat16": round(run16["accuracy"], 4),
        "stamps_test_images": len(v32),
        "head_training_seconds_1000_steps_batch_100": round(run32["seconds"], 2),
        "label_one_image_process_seconds": label_one["label_one_image_kept_litert_process_seconds"],
        **label_one,
        "label_folder_images": small_count,
        "label_folder_images_per_second": rate(headline, "label_image_folder"),
        "label_folder_vs_caching": ratio(headline, "label_image_folder", "caching"),
        "targets": {
            "caching vs the Keras recipe, small images": target(ratio(headline, "caching", "keras_recipe"), 1.5),
            "caching vs the Keras recipe, camera photos": target(ratio(camera_panel, "caching", "keras_recipe"), 1.5),
            "Lite0 caching, fraction of the floor for its precision": target(fraction_of_floor, 0.6),
            "labelling a folder vs caching": target(ratio(headline, "label_image_folder", "caching"), 0.9),
            "one image labelled (whole process) vs through TensorFlow": target(label_one["label_one_image_speedup"], 5),
        },
        "rounds": rounds,
        "camera_rounds": camera_rounds,
        "camera_photos": camera_count,
        "bench_minutes": round((time.perf_counter() - started) / 60),
        "contenders": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}",
        "versions": tlc.course.environment(),
    }
    options = " --quick" if args.quick else (f" --rounds {rounds}" if rounds != 3 else "")
    write_results(summary, results, floors, "python bench/performance.py" + options)
    return 0


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def write_results(summary: dict, results: dict, floors: dict, command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, floors, RESULTS / "performance.png", summary["default_precision"])
    contenders = "\n".join(
        f"| {panel} | {name} | {figures['images_per_second']} | {figures['cpu_ms_per_image']} "
        f"| {figures['peak_memory_added_mb']} | {', '.join(map(str, figures['rounds']))} |"
        for panel, named in results.items()
        for name, figures in named.items()
    )
    scalars = "\n".join(f"| {key} | {value} |" for key, value in summary.items() if not isinstance(value, dict))
    versions = ", ".join(f"{key} {value}" for key, value in summary["versions"].items())
    (RESULTS / "performance.md").write_text(
        f"# Performance\n\n`{command}` on {summary['machine']}; {versions}.\n\n"
        f"Best of {summary['rounds']} interleaved rounds per contender ({summary['camera_rounds']} for the "
        f"{summary['camera_photos']} camera photos); the whole run took {summary['bench_minutes']} minutes.\n\n"
        "| backbone, images | contender | images/s | CPU ms/image | peak memory added (MB) | every round (images/s) |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"{contenders}\n\n| measure | value |\n| --- | --- |\n{scalars}\n\n![performance](performance.png)\n"
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
