"""Deployment benchmark: the three export formats side by side, and the backbones by accuracy, speed and size.

    python bench/deploy.py            # the full run (about 15 minutes on 2 busy cores)
    python bench/deploy.py --quick    # fewer images and rounds, for a fast check

    # the same in two parts: everything but the clock, niced, then the clock alone on a quiet machine
    nice -n 19 python bench/deploy.py --part exports
    python bench/deploy.py --part speeds

    # add the backbones after Lite0 to the last results, keeping its other figures, then time them all
    nice -n 19 python bench/deploy.py --part backbones
    python bench/deploy.py --part speeds

For a model retrained on ``stamps`` (EfficientNet-Lite0, the tutorial's recipe, 1,000 steps):
- the fixed-size resize outside the model (``tlcourse.tflite.resize_for_model``) against the
  course's in-model preprocessing: the model's input in pixel levels, the bottleneck, the answers;
  and an app-like Pillow resize for comparison;
- file sizes of the SavedModel, the float TFLite and the full-integer int8 TFLite models;
- top-1 agreement of each TFLite model with the Keras model on the same fixed-size input, counted
  in images: the 13 test images, every non-training image, every image; and the same for a model
  retrained on ``many_classes`` (117 labels) on its 652 test images, where answers are closer calls;
- milliseconds per image at batch 1 on this CPU (best of interleaved rounds; compare as ratios).
For each backbone whose weights are here: TFLite sizes and milliseconds per image; its accuracy on
``many_classes`` comes from bench/results/many_classes.json (same recipe for both Lite models).
Every millisecond figure (the formats and the backbones) comes from one interleaved block of rounds,
so they compare as ratios. The exported models are kept in runs/bench_deploy/ between the two parts.
Writes bench/results/deploy.json, deploy.md and deploy.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlcourse as tlc  # noqa: E402
from tlcourse import litert, tflite  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BOTTLENECKS = ROOT / "runs" / "bottlenecks"
EXPORTS = ROOT / "runs" / "bench_deploy"  # the exported models and their figures, from --part exports to speeds
FORMATS = ("saved_model", "tflite_float", "tflite_int8")
# Rows of bench/results/many_classes.json trained like TUNED below; a backbone without one gets no accuracy.
MANY_CLASSES_ROWS = {
    "efficientnet_lite0": "+ tuned L2",
    "efficientnet_lite2": "Lite2 instead of Lite0 (tuned L2 settings)",
}


def megabytes(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


# The tutorial's new layer, and lesson 09's tuned one for many labels (its L2 fixed at the value lesson 09
# chooses): the tuned layer's answers are more confident than the tutorial's.
TUTORIAL = tlc.pipeline.HeadRecipe("tutorial", tlc.train.TrainConfig(how_many_training_steps=1000))
TUNED = tlc.pipeline.HeadRecipe("tuned", dataclasses.replace(tlc.many_classes.TUNED, l2=0.001))


def train_model(dataset, backbone, recipe=TUTORIAL):
    """The exported model of ``recipe`` trained on ``dataset``, and its evaluation on the test split."""
    trained = tlc.pipeline.run(recipe, dataset, backbone, BOTTLENECKS, progress=False)
    return trained.exported(backbone), trained.evaluate("test")


def load_fixed(records, preprocessing):
    """(raw images, fixed-size uint8 images) of ``records``."""
    raw = [tlc.images.load_image(record.path) for record in records]
    return raw, np.stack([np.asarray(tflite.resize_for_model(image, preprocessing)) for image in raw])


def export_paths(folder: Path) -> dict[str, Path]:
    return {
        "saved_model": folder / "saved_model",
        "tflite_float": folder / "model.tflite",
        "tflite_int8": folder / "model_int8.tflite",
    }


def export_all(model, dataset, folder: Path) -> dict[str, Path]:
    preprocessing = tflite.model_preprocessing(model)
    paths = export_paths(folder)
    tlc.export.write_saved_model(model, paths["saved_model"])
    started = time.perf_counter()
    tflite.write_tflite(model, paths["tflite_float"])
    print(f"float TFLite in {time.perf_counter() - started:.0f} s", flush=True)
    images, labels = tflite.calibration_images(dataset.split("train"), preprocessing)
    started = time.perf_counter()
    tflite.write_tflite(model, paths["tflite_int8"], "int8", tflite.representative_dataset(images, labels, len(images)))
    print(f"int8 TFLite in {time.perf_counter() - started:.0f} s ({len(images)} calibration images)", flush=True)
    return paths


def top1(classify, images, batch_size: int = 16) -> np.ndarray:
    return np.concatenate([classify(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).argmax(1)


def resize_fidelity(backbone, raw, fixed, preprocessing) -> dict:
    """How far the fixed-size uint8 input (and an app-like Pillow resize) is from the in-model preprocessing."""
    course = np.concatenate([tlc.backbones.preprocess_images(image[None], preprocessing) for image in raw])
    ours = (fixed.astype(np.float32) - preprocessing.offset) / preprocessing.scale
    pillow = np.stack([tflite.resize_with_pillow(image, preprocessing) for image in raw])
    pillow = (pillow.astype(np.float32) - preprocessing.offset) / preprocessing.scale
    reference = backbone.network.predict(course, verbose=0)
    result = {}
    for name, inputs in [("resize_for_model", ours), ("pillow_bicubic", pillow)]:
        levels = np.abs(inputs - course) * preprocessing.scale
        vectors = backbone.network.predict(inputs, verbose=0)
        relative = np.linalg.norm(vectors - reference, axis=1) / np.linalg.norm(reference, axis=1)
        result[name] = {
            "input_max_levels": round(float(levels.max()), 2),
            "input_mean_levels": round(float(levels.mean()), 3),
            "bottleneck_max_relative": round(float(relative.max()), 4),
            "bottleneck_mean_relative": round(float(relative.mean()), 4),
        }
    return result


def end_to_end_agreement(model, raw, fixed, preprocessing) -> dict:
    """The Keras model on each original image (in-model preprocessing) against the same network on a resized one."""
    keras_raw = np.array([np.asarray(model(image[None]))[0].argmax() for image in raw])
    network = tflite.keras_on_fixed_input(model)
    pillow = np.stack([tflite.resize_with_pillow(image, preprocessing) for image in raw])
    return {
        "images": len(raw),
        "resize_for_model_agree": int((top1(network, fixed) == keras_raw).sum()),
        "pillow_bicubic_agree": int((top1(network, pillow) == keras_raw).sum()),
    }


def agreement(paths, model, fixed, subsets: dict[str, np.ndarray]) -> dict:
    keras_top = top1(tflite.keras_on_fixed_input(model), fixed)
    result = {}
    for name in ("tflite_float", "tflite_int8"):
        tops = top1(tflite.TFLiteClassifier(paths[name]), fixed)
        result[name] = {
            subset: {"agree": int((tops[mask] == keras_top[mask]).sum()), "images": int(mask.sum())}
            for subset, mask in subsets.items()
        }
    return result


def speeds(folders: dict[str, Path], records, rounds: int) -> dict[str, dict[str, float]]:
    """ms per image at batch 1 of every format of every export in ``folders`` (name -> folder), on ``records``.

    Best of ``rounds`` rounds, each running every contender once in turn, so that all the figures come
    from the same stretch of time (a shared machine only ever slows a run down).
    """
    import tensorflow as tf

    def saved_model(path, preprocessing):
        saved = tf.saved_model.load(str(path)).signatures["classify_preprocessed"]

        def classify(images):
            pixels = (images.astype(np.float32) - preprocessing.offset) / preprocessing.scale
            return next(iter(saved(tf.constant(pixels)).values())).numpy()

        return classify

    contenders = {}
    for name, folder in folders.items():
        paths = export_paths(folder)
        tflites = {kind: tflite.TFLiteClassifier(paths[kind]) for kind in ("tflite_float", "tflite_int8")}
        preprocessing = tflites["tflite_float"].preprocessing
        _, fixed = load_fixed(records, preprocessing)
        contenders[name, "saved_model"] = saved_model(paths["saved_model"], preprocessing), fixed
        contenders.update({(name, kind): (classify, fixed) for kind, classify in tflites.items()})
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for key, (classify, fixed) in contenders.items():
            best[key] = min(best[key], tflite.milliseconds_per_image(classify, fixed, batch_size=1, rounds=1))
    result = {name: {} for name in folders}
    for (name, kind), value in best.items():
        result[name][kind] = round(value, 2)
    return result


def backbone_row(name: str, dataset, folder: Path, done=None) -> dict:
    """Sizes and stamps accuracy of one backbone's export; ``done`` (evaluation, paths) reuses an export."""
    try:
        backbone = tlc.backbones.load_backbone(name)
        if done is None:
            model, evaluation = train_model(dataset, backbone)
            paths = export_all(model, dataset, folder)
        else:
            evaluation, paths = done
    except Exception as error:  # one backbone failing must not lose the others' figures
        print(f"{name}: {type(error).__name__}: {error}", flush=True)
        return {"backbone": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    return {
        "backbone": name,
        "folder": str(folder.relative_to(EXPORTS)),
        "input_size": backbone.input_size,
        "tflite_float_mb": megabytes(paths["tflite_float"]),
        "tflite_int8_mb": megabytes(paths["tflite_int8"]),
        "saved_model_mb": megabytes(paths["saved_model"]),
        "stamps_test_correct": int(round(evaluation.accuracy * len(evaluation.labels))),
        "stamps_test_images": len(evaluation.labels),
    }


def add_many_classes_accuracy(row: dict) -> None:
    """The backbone's accuracy on many_classes, from bench/results/many_classes.json (None where not measured)."""
    path = RESULTS / "many_classes.json"
    many = json.loads(path.read_text()) if path.is_file() else {}
    found = {r["name"]: r for r in many.get("techniques", [])}.get(MANY_CLASSES_ROWS.get(row["backbone"], ""), {})
    interval = found.get("interval", {})
    row.update(
        many_classes_accuracy=found.get("accuracy"),
        many_classes_interval=[interval["low"], interval["high"]] if interval else None,
        many_classes_recipe=found.get("name"),
        many_classes_test_images=many.get("num_test_images"),
        # the paired difference on the same test images from the row it changes one thing from (Lite2: Lite0's)
        many_classes_comparison=(
            {"with": found["compared_with"], "within_noise": found["within_noise"], **found["comparison"]}
            if "comparison" in found
            else None
        ),
    )


def plot(results: dict, path: Path) -> None:
    rows = [row for row in results["backbones"] if row.get("many_classes_accuracy") is not None]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        y = 100 * row["many_classes_accuracy"]
        low, high = (100 * value for value in row["many_classes_interval"])
        for axis, kind in zip(axes, ("tflite_float", "tflite_int8"), strict=True):
            x, size = row["ms_per_image"][kind], row[f"{kind}_mb"]
            axis.errorbar(x, y, yerr=[[y - low], [high - y]], fmt="none", ecolor="grey", capsize=4)
            axis.scatter(x, y, s=40 * size, alpha=0.5)
            axis.annotate(f"{row['backbone']}\n{size:.1f} MB", (x, y))
    for axis, kind in zip(axes, ("TFLite float", "TFLite int8"), strict=True):
        axis.set_xlabel(f"ms per image, {kind}, batch 1, this CPU")
        axis.set_ylabel("many_classes top-1 accuracy (%), 95% interval")
        axis.set_title(f"{kind}: marker area = file size")
        axis.margins(0.4)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_markdown(results: dict, path: Path) -> None:
    formats, agree = results["formats"], results["agreement"]
    lines = [
        "# Deployment: export formats and backbones",
        "",
        f"Made by `{results['command']}` on {results['machine']} ({results['date']}).",
        "",
        "| format | MB | ms per image | top-1 agreement with Keras (stamps, held out) | many_classes test (tuned) |",
        "| --- | --- | --- | --- | --- |",
    ]
    many = results.get("many_classes_agreement", {})
    for name in ("saved_model", "tflite_float", "tflite_int8"):
        held = agree.get(name, {}).get("held_out", {"agree": "same network", "images": ""})
        held_text = f"{held['agree']} of {held['images']}" if held["images"] else held["agree"]
        mc = many.get(name, {}).get("test")
        mc_text = f"{mc['agree']} of {mc['images']}" if mc else "same network"
        lines.append(f"| {name} | {formats[name]['mb']} | {formats[name]['ms_per_image']} | {held_text} | {mc_text} |")
    fidelity = results["resize"]
    lines += [
        "",
        "Resize outside the model vs the course's in-model preprocessing (stamps, every image):",
        "",
        "| resize | input max / mean (pixel levels) | bottleneck max / mean relative change | same answer |",
        "| --- | --- | --- | --- |",
    ]
    end_to_end = results["end_to_end"]
    for name in ("resize_for_model", "pillow_bicubic"):
        f = fidelity[name]
        lines.append(
            f"| {name} | {f['input_max_levels']} / {f['input_mean_levels']} | {f['bottleneck_max_relative']} / "
            f"{f['bottleneck_mean_relative']} | {end_to_end[name + '_agree']} of {end_to_end['images']} |"
        )
    lines += [
        "",
        "| backbone | input | float MB | int8 MB | ms float | ms int8 | many_classes accuracy [95% interval] |",
        "| --- " * 7 + "|",
    ]
    for row in [row for row in results["backbones"] if "error" not in row]:
        accuracy, interval = row["many_classes_accuracy"], row["many_classes_interval"]
        accuracy = f"{accuracy:.1%} [{interval[0]:.1%}, {interval[1]:.1%}]" if accuracy is not None else "n/a"
        speed = row["ms_per_image"]
        lines.append(
            f"| {row['backbone']} | {row['input_size']} | {row['tflite_float_mb']} | {row['tflite_int8_mb']} | "
            f"{speed['tflite_float']} | {speed['tflite_int8']} | {accuracy} |"
        )
    lines += ["", "int8 against Keras on many_classes test images, by how the new layer was trained:", ""]
    for recipe, row in results.get("many_classes_recipes", {}).items():
        test = row["agreement"]["tflite_int8"]["test"]
        lines.append(
            f"- {recipe}: Keras test accuracy {row['keras_test_accuracy']:.1%}, median top probability "
            f"{row['median_top_probability']}; int8 agrees on {test['agree']} of {test['images']}"
        )
    lines += ["", results["notes"], ""]
    path.write_text("\n".join(lines))


def measure_exports(quick: bool) -> dict:
    """Everything but the milliseconds: trains, exports into EXPORTS, and measures sizes and agreement."""
    many_test = 120 if quick else None
    stamps = tlc.data.scan_dataset(tlc.datasets.stamps())
    backbone = tlc.backbones.load_backbone("efficientnet_lite0")
    model, stamps_evaluation = train_model(stamps, backbone)
    preprocessing = tflite.model_preprocessing(model)
    raw, fixed = load_fixed(stamps.images, preprocessing)
    shutil.rmtree(EXPORTS, ignore_errors=True)  # this bench's own models from an earlier run
    paths = export_all(model, stamps, EXPORTS / "stamps")
    splits = np.array([record.split for record in stamps.images])
    subsets = {"test": splits == "test", "held_out": splits != "train", "all": np.ones(len(splits), bool)}
    results = {
        "quick": quick,
        "resize": resize_fidelity(backbone, raw, fixed, preprocessing),
        "end_to_end": end_to_end_agreement(model, raw, fixed, preprocessing),
        "agreement": agreement(paths, model, fixed, subsets),
        "formats": {name: {"mb": megabytes(paths[name])} for name in FORMATS},
    }
    print(json.dumps(results, indent=1), flush=True)

    many = tlc.data.scan_dataset(tlc.datasets.many_classes())
    test_records = many.split("test")[:many_test]
    _, many_fixed = load_fixed(test_records, preprocessing)
    all_test = np.ones(len(test_records), bool)
    results["many_classes_recipes"] = {}
    with tempfile.TemporaryDirectory(prefix="deploy_bench_") as folder:
        for recipe in (TUTORIAL, TUNED):
            many_model, many_evaluation = train_model(many, backbone, recipe)
            many_paths = export_all(many_model, many, Path(folder) / recipe.name)
            agree = agreement(many_paths, many_model, many_fixed, {"test": all_test})
            top = tflite.keras_on_fixed_input(many_model)(many_fixed).max(axis=1)
            results["many_classes_recipes"][recipe.name] = {
                "keras_test_accuracy": round(many_evaluation.accuracy, 4),
                "median_top_probability": round(float(np.median(top)), 3),
                "agreement": agree,
                "settings": dataclasses.asdict(recipe.config),
            }
            print(recipe.name, json.dumps(results["many_classes_recipes"][recipe.name]), flush=True)
    results["many_classes_agreement"] = results["many_classes_recipes"]["tuned"]["agreement"]

    names = backbone_names()
    results["backbones"] = [
        backbone_row(name, stamps, EXPORTS / "stamps", (stamps_evaluation, paths))
        if name == "efficientnet_lite0"
        else backbone_row(name, stamps, EXPORTS / "backbones" / name)
        for name in names
    ]
    return results


def backbone_names() -> list[str]:
    names = ["efficientnet_lite0", "efficientnet_lite2"]
    if tlc.backbones.inception_weights_path(tlc.config.models_dir()).is_file():
        names.append("inception_v3")
    return names


def add_backbones() -> dict:
    """bench/results/deploy.json with the rows of the backbones after Lite0 exported again into EXPORTS.

    Keeps every other figure of that file (the formats' agreement, the resize, many_classes), and the
    Lite0 export that ``--part exports`` left in EXPORTS/stamps (the formats table's model): its
    sizes are read again, and ``--part speeds`` times it with the others in one block.
    """
    results = json.loads((RESULTS / "deploy.json").read_text())
    paths = export_paths(EXPORTS / "stamps")
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        sys.exit(f"no Lite0 export to keep ({', '.join(missing)}): run `python bench/deploy.py --part exports`")
    stamps = tlc.data.scan_dataset(tlc.datasets.stamps())
    lite0 = next(row for row in results["backbones"] if row["backbone"] == "efficientnet_lite0")
    kept = ("backbone", "input_size", "stamps_test_correct", "stamps_test_images")
    lite0 = {**{key: lite0[key] for key in kept if key in lite0}, "folder": "stamps"}
    lite0.update({f"{kind}_mb": megabytes(paths[kind]) for kind in FORMATS})
    for name in FORMATS:
        results["formats"][name] = {"mb": megabytes(paths[name])}
    others = [backbone_row(name, stamps, EXPORTS / "backbones" / name) for name in backbone_names()[1:]]
    results.update(
        backbones=[lite0, *others],
        quick=False,
        kept_from=f"`{results['command']}` ({results['date']})",
    )
    return results


def measure_speeds(results: dict) -> None:
    """The milliseconds of the formats and of every backbone's export, in one block of interleaved rounds."""
    rounds, speed_images = (1, 16) if results["quick"] else (3, 48)
    stamps = tlc.data.scan_dataset(tlc.datasets.stamps())
    rows = [row for row in results["backbones"] if "error" not in row]
    measured = speeds({row["backbone"]: EXPORTS / row["folder"] for row in rows}, stamps.images[:speed_images], rounds)
    for row in rows:
        row["ms_per_image"] = measured[row["backbone"]]
        add_many_classes_accuracy(row)
    lite0 = next(row for row in rows if row["folder"] == "stamps")
    for name in FORMATS:
        results["formats"][name]["ms_per_image"] = lite0["ms_per_image"][name]
    results["speed"] = {
        "rounds": rounds,
        "images": speed_images,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    parser.add_argument(
        "--part",
        choices=["all", "exports", "backbones", "speeds"],
        default="all",
        help="exports: everything but the milliseconds, kept in runs/bench_deploy/ (run it niced); "
        "backbones: only the backbones after Lite0, keeping the other figures of bench/results/deploy.json "
        "and the Lite0 export in runs/bench_deploy/ (run it niced); "
        "speeds: the milliseconds of those exports, then the results files (run it alone on the machine)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    saved = EXPORTS / "exports.json"
    if args.part == "speeds":
        if not saved.is_file():
            parser.error(f"{saved} is not there: run `python bench/deploy.py --part exports` first")
        results = json.loads(saved.read_text())
    else:
        results = add_backbones() if args.part == "backbones" else measure_exports(args.quick)
        results["exports_seconds"] = round(time.perf_counter() - started)
        results["exports_command"] = f"python bench/deploy.py --part {args.part}" + (" --quick" if args.quick else "")
        EXPORTS.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=2))
        if args.part in ("exports", "backbones"):
            print(f"wrote {saved}; now `python bench/deploy.py --part speeds`")
            return 0
        started = time.perf_counter()
    measure_speeds(results)
    skipped = (
        ""
        if any(r["backbone"] == "inception_v3" for r in results["backbones"])
        else (" Inception-v3 was left out: its weights are not here (offline).")
    )
    results.update(
        notes=(
            "Agreement: the TFLite model against the Keras model on the same fixed-size uint8 input, counted in "
            "images. ms per image: batch 1, best of interleaved rounds over every format of every backbone in "
            "one block; a shared machine only slows a run down, so compare as ratios within the run." + skipped
        )
        + (
            f" The agreement, resize and many_classes figures are kept from {results['kept_from']}; the sizes "
            "and every millisecond figure come from this run."
            if results.get("kept_from")
            else ""
        ),
        runtime=litert.interpreter_class()[1],
        command="python bench/deploy.py" + (" --quick" if results["quick"] else "")
        if args.part == "all"
        else f"{results['exports_command']}, then python bench/deploy.py --part speeds",
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        date=time.strftime("%Y-%m-%d"),
        speeds_seconds=round(time.perf_counter() - started),
        versions=tlc.course.environment(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "deploy.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, RESULTS / "deploy.md")
    plot(results, RESULTS / "deploy.png")
    print((RESULTS / "deploy.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
