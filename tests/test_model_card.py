"""The model card retrain writes beside every model, and the same content in its JSON report."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.test_retrain import config_for, small_stamps
from tlcourse import calibration, label, model_card, retrain, stats, train
from tlcourse.data import Dataset, ImageRecord, scan_dataset
from tlcourse.download import content_hash, file_hash


def card_numbers(markdown: str) -> list[str]:
    """Every percentage and 3-decimal figure in the markdown card, in order."""
    return re.findall(r"\d+\.\d+%?", markdown)


def percent(interval: dict) -> str:
    return (
        f"{interval['value']:.1%} ({interval['correct']} of {interval['total']}; "
        f"95% interval {interval['low']:.1%} to {interval['high']:.1%})"
    )


def test_the_card_beside_the_model_holds_the_reports_numbers_and_the_written_files(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=14)
    (image_dir / "fruit" / "notes.txt").write_text("not an image")
    result = retrain.retrain(config_for(tmp_path, image_dir, precision="float32"), progress=False)
    out = tmp_path / "out"
    assert result.paths["model_card"] == out / "g.model_card.md"
    markdown = (out / "g.model_card.md").read_text()
    report = json.loads((out / "g.report.json").read_text())
    card = report["model_card"]
    assert card == json.loads(json.dumps(result.report["model_card"]))
    assert markdown == model_card.to_markdown(card, "g.pb")

    # the numbers describe the model written: label the test images with it, as a user would
    dataset = scan_dataset(image_dir)
    test = dataset.split("test")
    names = label.read_labels(out / "labels.txt")
    labelled = label.label_images([r.path for r in test], out / "g.keras", out / "labels.txt", top_k=len(names))
    probabilities = np.array([[dict(item.top)[name] for name in names] for item in labelled])
    truth = np.array([names.index(r.label) for r in test])
    correct = probabilities.argmax(axis=1) == truth
    assert card["test_accuracy"] == stats.bootstrap_interval(correct).to_json()
    assert card["test_accuracy"]["value"] == report["accuracy"] == result.evaluation.accuracy
    ece = calibration.expected_calibration_error(probabilities, truth, 10)
    assert card["calibration"]["ece"] == pytest.approx(ece, abs=1e-4)
    assert set(card["per_label_accuracy"]) == set(names)  # every label in the JSON
    for index, name in enumerate(names):
        mine = truth == index
        assert card["per_label_accuracy"][name] == stats.bootstrap_interval(correct[mine]).to_json()

    # the markdown quotes the JSON: test accuracy, every label weakest first, the ECE, the data
    assert f"- Test accuracy: {percent(card['test_accuracy'])}" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "interval" in line]
    ranked = sorted(card["per_label_accuracy"].items(), key=lambda item: (item[1]["value"], item[1]["low"], item[0]))
    assert rows == [f"| {name} | {percent(interval)} |" for name, interval in ranked]
    assert f"({card['calibration']['bins']} bins): {card['calibration']['ece']:.3f}" in markdown
    counts = card["data"]["images_per_split"]
    assert counts == {split: len(dataset.split(split)) for split in ("train", "validation", "test")}
    assert f"Images: {counts['train']} train, {counts['validation']} validation, {counts['test']} test" in markdown
    assert card["data"]["skipped_files"] == 1 and "1 file(s) skipped" in markdown
    assert card["data"]["sha256"] == model_card.dataset_hash(dataset)
    assert card["backbone"] == {"name": "efficientnet_lite0", "fingerprint": report["fingerprint"]}
    assert card["recipe"]["name"] == report["recipe"]["name"]
    assert "`how_many_training_steps=60`" in markdown and "`distortions.random_crop=0.0`" in markdown

    # hashes of the files as they are on disk, after the move into place
    assert card["files"] == {name: file_hash(out / name) for name in ("g.pb", "g.keras", "labels.txt")}
    for name, digest in card["files"].items():
        assert f"| `{name}` | `{digest}` |" in markdown

    # nothing invented: no temperature, no threshold, no int8 model, and the card says so
    assert card["calibration"]["temperature"] is None and card["unknown_threshold"] is None
    assert card["int8_agreement"] is None and card["recipe_search"] is None
    assert "No int8 model was written." in markdown and "int8 model gives" not in markdown
    assert "No temperature was fitted" in markdown and "No unknown-image threshold was chosen" in markdown
    quoted = {f"{card['calibration']['ece']:.3f}", f"{card['calibration']['mean_top_score']:.1%}"}
    for interval in [card["test_accuracy"], *card["per_label_accuracy"].values()]:
        quoted |= {f"{interval[key]:.1%}" for key in ("value", "low", "high")}
    measured = [line for line in markdown.split("## Files")[0].splitlines() if not line.startswith("- Settings:")]
    assert set(card_numbers("\n".join(measured))) <= quoted  # no figure the report does not hold


@pytest.mark.slow
def test_an_int8_model_gets_its_agreement_and_a_saved_model_its_hash(stamps_dir, tmp_path):
    image_dir = small_stamps(stamps_dir, tmp_path / "images", per_label=14)
    settings = config_for(
        tmp_path,
        image_dir,
        output_tflite=tmp_path / "out" / "g.tflite",
        tflite_quantization="int8",
        saved_model_dir=tmp_path / "out" / "saved",
    )
    result = retrain.retrain(settings, progress=False)
    card = result.report["model_card"]
    test = scan_dataset(image_dir).split("test")
    phone = label.label_images([r.path for r in test], tmp_path / "out" / "g.tflite", top_k=1)
    keras = label.label_images([r.path for r in test], tmp_path / "out" / "g.keras", tmp_path / "out" / "labels.txt")
    agree = sum(a.top[0][0] == b.top[0][0] for a, b in zip(phone, keras, strict=True))
    assert card["int8_agreement"] == {"agree": agree, "images": len(test)}
    markdown = result.paths["model_card"].read_text()
    assert f"top answer on {agree} of {len(test)} test images" in markdown
    assert "No int8 model" not in markdown
    assert card["files"]["saved"] == content_hash(tmp_path / "out" / "saved")
    assert card["files"]["g.tflite"] == file_hash(tmp_path / "out" / "g.tflite")


def synthetic(labels: list[str], truth: list[int], predicted: list[int]):
    """A dataset and a test evaluation without training: the card's arithmetic alone."""
    records = [
        ImageRecord(Path(f"/d/{labels[t]}/{i}.jpg"), labels[t], f"{i}.jpg", f"{i:064x}", "test")
        for i, t in enumerate(truth)
    ]
    dataset = Dataset(Path("/d"), labels, records)
    probabilities = np.full((len(truth), len(labels)), 0.1)
    probabilities[np.arange(len(truth)), predicted] = 0.8
    evaluation = train.Evaluation(labels, np.array(truth), np.array(predicted), probabilities, records)
    return dataset, evaluation


class Backbone:
    name, fingerprint = "lite", "0123456789abcdef"


def test_weakest_labels_first_and_at_most_ten_in_the_markdown():
    labels = [f"label{i:02d}" for i in range(12)] + ["unseen"]
    truth = [i for i in range(12) for _ in range(4)]
    predicted = []
    for t in range(12):
        right = 1 + t % 4  # 1 to 4 of 4 right
        predicted += [t] * right + [(t + 1) % 12] * (4 - right)
    dataset, evaluation = synthetic(labels, truth, predicted)
    card = model_card.build(dataset, Backbone(), {"name": "new layer"}, evaluation)
    assert card["per_label_accuracy"]["unseen"] is None and len(card["per_label_accuracy"]) == 13
    markdown = model_card.to_markdown(card)
    rows = [line.split(" | ")[0][2:] for line in markdown.splitlines() if line.startswith("| label") and "of 4" in line]
    assert len(rows) == model_card.CARD_LABELS
    assert rows[:3] == ["label00", "label04", "label08"]  # 1 of 4 right
    assert "10 weakest of 13; every label is in the report" in markdown
    assert "label09, ... (13 in all, in the report)" in markdown


def test_what_a_lesson_fitted_or_chose_is_on_the_card_and_auto_lists_its_recipes():
    dataset, evaluation = synthetic(["a", "b"], [0, 0, 1, 1], [0, 0, 1, 0])
    search = {
        "budget_minutes": 60,
        "tried": [
            {
                "recipe": "new layer, as the flags say",
                "validation_accuracy": 0.5,
                "validation_interval": [0.2, 0.8],
                "validation_images": 10,
                "seconds": 3.0,
                "chosen": False,
                "settings": {},
                "notes": {},
            },
            {
                "recipe": "tuned new layer",
                "validation_accuracy": 0.9,
                "validation_interval": [0.7, 1.0],
                "validation_images": 10,
                "seconds": 5.0,
                "chosen": True,
                "settings": {},
                "notes": {},
            },
        ],
        "skipped": {"top 5 blocks fine-tuned": "the time budget (60 min) was spent"},
    }
    card = model_card.build(
        dataset,
        Backbone(),
        {"name": "tuned new layer"},
        evaluation,
        recipe_search=search,
        temperature=1.5,
        threshold=0.6,
    )
    markdown = model_card.to_markdown(card)
    assert "| new layer, as the flags say | 50.0% [20.0%, 80.0%] | 10 | 3 |" in markdown
    assert "| **tuned new layer** (chosen) | 90.0% [70.0%, 100.0%] | 10 | 5 |" in markdown
    assert "| top 5 blocks fine-tuned | not run: the time budget (60 min) was spent | | |" in markdown
    assert "Temperature 1.500, fitted on validation" in markdown
    assert "`label_image.py --threshold 0.600`" in markdown
    with pytest.raises(ValueError, match="between 0 and 1"):
        model_card.build(dataset, Backbone(), {"name": "x"}, evaluation, threshold=1.5)
