"""A model card: what a model was trained on, how, and how far to trust its answers.

``retrain.py`` writes one beside every model (``<output_graph stem>.model_card.md``) and keeps
the same content in its JSON report, under ``model_card``: the markdown is rendered from that
dict, so the two cannot disagree. What it holds:

- the data: labels, images per split, skipped files, and a hash of the images and their split;
- the backbone and its fingerprint; the recipe and its settings (with ``--recipe=auto``, every
  recipe tried, with its validation accuracy and interval);
- test accuracy with its bootstrap interval, and per-label accuracy with intervals (the card lists
  the weakest labels first; the JSON holds all of them);
- calibration: the expected calibration error on test, and the temperature if one was fitted;
- the unknown-image threshold, if one was chosen on validation;
- the int8 model's agreement with the Keras model, if an int8 model was written;
- the SHA-256 of every model file.

A card says what was measured and nothing more: a temperature, a threshold or an int8 model that
was not made is named as not made. Lessons ``11_calibration`` and ``12_unknown_images`` show the
card of the model they use, with its temperature and its threshold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tlcourse import calibration, stats
from tlcourse.data import SPLITS, Dataset

CARD_LABELS = 10  # labels listed in the markdown card, weakest first (the JSON holds every label)
ECE_BINS = 10


def card_path(output_graph: str | Path) -> Path:
    """Where the card of ``output_graph`` goes: ``model.pb`` -> ``model.model_card.md``."""
    return Path(output_graph).with_suffix(".model_card.md")


def dataset_hash(dataset: Dataset) -> str:
    """SHA-256 of every image's content, label, path in its label folder and split: the data a model saw."""
    lines = sorted(f"{r.split}\t{r.label}\t{r.relative}\t{r.sha256}\n" for r in dataset.images)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _interval(correct) -> dict | None:
    return stats.bootstrap_interval(correct).to_json() if len(correct) else None


def build(
    dataset: Dataset,
    backbone,
    recipe: dict,
    test,
    *,
    recipe_search: dict | None = None,
    temperature: float | None = None,
    threshold: float | None = None,
) -> dict:
    """The card of a model, as a JSON-ready dict (``to_markdown`` renders it).

    ``backbone``: what computed the bottlenecks (its ``name`` and ``fingerprint``); ``recipe``: its
    ``name`` and ``settings``; ``test``: the model's ``train.Evaluation`` on the test split;
    ``recipe_search``: the report's ``recipe_search`` (``--recipe=auto``); ``temperature``: the one
    fitted on validation, already in the model's weights; ``threshold``: the unknown-image
    threshold chosen on validation (``label_image.py --threshold``). The model files' hashes and
    the int8 agreement are added when the files are written (``add_files``).
    """
    correct = np.asarray(test.labels) == np.asarray(test.predictions)
    per_label = {
        name: _interval(correct[np.asarray(test.labels) == index]) for index, name in enumerate(test.class_names)
    }
    card = {
        "data": {
            "folder": str(dataset.root),
            "labels": list(dataset.class_names),
            "images_per_split": {split: len(dataset.split(split)) for split in SPLITS},
            "images_per_label": dataset.counts(),
            "skipped_files": len(dataset.skipped),
            "sha256": dataset_hash(dataset),
        },
        "backbone": {"name": backbone.name, "fingerprint": backbone.fingerprint},
        "recipe": {"name": recipe["name"], "settings": recipe.get("settings", {})},
        "recipe_search": None,
        "test_accuracy": _interval(correct),
        "per_label_accuracy": per_label,
        "calibration": {
            "ece": None,
            "bins": ECE_BINS,
            "mean_top_score": None,
            "temperature": None if temperature is None else float(temperature),
        },
        "unknown_threshold": None if threshold is None else calibration.check_threshold(threshold),
        "int8_agreement": None,
        "files": {},
    }
    if len(correct):
        probabilities = np.asarray(test.probabilities)
        card["calibration"]["ece"] = calibration.expected_calibration_error(probabilities, test.labels, ECE_BINS)
        card["calibration"]["mean_top_score"] = float(calibration.top_probability(probabilities).mean())
    if recipe_search is not None:
        keep = ("recipe", "validation_accuracy", "validation_interval", "validation_images", "seconds", "chosen")
        card["recipe_search"] = {
            "budget_minutes": recipe_search["budget_minutes"],
            "tried": [{key: row[key] for key in keep} for row in recipe_search["tried"]],
            "skipped": dict(recipe_search["skipped"]),
        }
    return card


def add_files(card: dict, files: dict[str, Path], int8_agreement: dict | None = None) -> None:
    """Record the SHA-256 of each written file (``{name shown: path}``; a folder hashes its files) in ``card``.

    ``int8_agreement``: ``{"agree": n, "images": m}``, the int8 model's top-1 answers against the
    Keras model's on the same test images, when an int8 model was written.
    """
    from tlcourse.download import content_hash

    card["files"] = {name: content_hash(path) for name, path in files.items()}
    card["int8_agreement"] = int8_agreement


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as ``{"distortions.random_crop": 0.0, ...}``."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _percent(interval: dict | None) -> str:
    if interval is None:
        return "no test images"
    return (
        f"{interval['value']:.1%} ({interval['correct']} of {interval['total']}; "
        f"95% interval {interval['low']:.1%} to {interval['high']:.1%})"
    )


def _weakest_first(per_label: dict) -> list[tuple[str, dict | None]]:
    """Labels by accuracy, then by the interval's low end; labels without test images last."""
    return sorted(
        per_label.items(),
        key=lambda item: (item[1] is None, *((item[1]["value"], item[1]["low"]) if item[1] else (0, 0)), item[0]),
    )


def to_markdown(card: dict, title: str = "the model") -> str:
    """The card as a short markdown page; every number in it comes from ``card``."""
    data, calibrated = card["data"], card["calibration"]
    split_counts = ", ".join(f"{count} {split}" for split, count in data["images_per_split"].items())
    labels = data["labels"]
    named = ", ".join(labels[:CARD_LABELS]) + (
        f", ... ({len(labels)} in all, in the report)" if len(labels) > CARD_LABELS else ""
    )
    skipped = data["skipped_files"]
    skipped_text = (
        f"{skipped} file(s) skipped (listed in the report, with the reason)" if skipped else "no file skipped"
    )
    lines = [
        f"# Model card: {title}",
        "",
        "Written by tlcourse; `retrain.py` keeps the same content in its JSON report, under `model_card`.",
        "",
        "## Data",
        "",
        f"- Folder: `{data['folder']}`",
        f"- {len(labels)} labels: {named}",
        f"- Images: {split_counts}; {skipped_text}.",
        f"- SHA-256 of the images, their labels and splits: `{data['sha256']}`",
        "",
        "## Backbone and recipe",
        "",
        f"- Backbone: `{card['backbone']['name']}`, fingerprint `{card['backbone']['fingerprint']}`",
        f"- Recipe: {card['recipe']['name']}",
    ]
    settings = card["recipe"]["settings"]
    if settings:
        lines.append("- Settings: " + ", ".join(f"`{key}={value}`" for key, value in _flat(settings).items()))
    search = card["recipe_search"]
    if search is not None:
        lines += [
            "",
            f"Recipes tried, chosen on validation (budget {search['budget_minutes']:g} min):",
            "",
            "| recipe | validation [95% interval] | images | seconds |",
            "| --- | --- | --- | --- |",
        ]
        for row in search["tried"]:
            low, high = row["validation_interval"]
            name = f"**{row['recipe']}** (chosen)" if row["chosen"] else row["recipe"]
            lines.append(
                f"| {name} | {row['validation_accuracy']:.1%} [{low:.1%}, {high:.1%}] | "
                f"{row['validation_images']} | {row['seconds']:g} |"
            )
        lines += [f"| {name} | not run: {why} | | |" for name, why in search["skipped"].items()]
    lines += ["", "## Accuracy on test", "", f"- Test accuracy: {_percent(card['test_accuracy'])}"]
    ranked = _weakest_first(card["per_label_accuracy"])
    shown = ranked[:CARD_LABELS]
    more = f" ({len(shown)} weakest of {len(ranked)}; every label is in the report)" if len(ranked) > len(shown) else ""
    lines += [f"- Per label, weakest first{more}:", "", "| label | test accuracy |", "| --- | --- |"]
    lines += [f"| {name} | {_percent(interval)} |" for name, interval in shown]
    lines += ["", "## Calibration", ""]
    if calibrated["ece"] is None:
        lines.append("- No test images: calibration was not measured.")
    else:
        lines.append(
            f"- Expected calibration error on test ({calibrated['bins']} bins): {calibrated['ece']:.3f}; "
            f"mean top score {calibrated['mean_top_score']:.1%}."
        )
    if calibrated["temperature"] is None:
        lines.append("- No temperature was fitted: the scores are the softmax as trained.")
    else:
        lines.append(
            f"- Temperature {calibrated['temperature']:.3f}, fitted on validation, is in the weights "
            "(the answers are unchanged, the scores rescaled)."
        )
    lines += ["", "## Images of none of the labels", ""]
    if card["unknown_threshold"] is None:
        lines.append("- No unknown-image threshold was chosen: every image gets one of the labels.")
    else:
        lines.append(
            f"- Threshold {card['unknown_threshold']:.3f}, chosen on validation: "
            f"`label_image.py --threshold {card['unknown_threshold']:.3f}` answers unknown at or below it."
        )
    lines += ["", "## Phone model (int8)", ""]
    agreement = card["int8_agreement"]
    if agreement is None:
        lines.append("- No int8 model was written.")
    else:
        lines.append(
            f"- The int8 model gives the Keras model's top answer on {agreement['agree']} of "
            f"{agreement['images']} test images."
        )
    if card["files"]:
        lines += ["", "## Files (SHA-256)", "", "| file | SHA-256 |", "| --- | --- |"]
        lines += [f"| `{name}` | `{digest}` |" for name, digest in card["files"].items()]
    return "\n".join(lines) + "\n"


def int8_agreement(model, tflite_path: str | Path, records) -> dict:
    """``{"agree": n, "images": m}``: the int8 ``.tflite`` file's top answer against the Keras ``model``'s.

    Both on the same fixed-size input (``tflite.resize_for_model``) of each readable image of ``records``.
    """
    from tlcourse import tflite
    from tlcourse.images import ImageError, load_image

    phone_model, keras_model = tflite.TFLiteClassifier(tflite_path), tflite.keras_on_fixed_input(model)
    agree = images = 0
    for record in records:
        try:
            image = phone_model.prepare(load_image(record.path))[None]
        except ImageError:
            continue
        agree += int(phone_model(image).argmax() == keras_model(image).argmax())
        images += 1
    return {"agree": agree, "images": images}
