"""`python -m tlcourse.compare A B`: two models trained here on stamps, one for 1 step, one for 100."""

import json

import numpy as np
import pytest

from tlcourse import compare, course, label, stats
from tlcourse.data import scan_dataset


@pytest.fixture(scope="module")
def models(tmp_path_factory, stamps_dir):
    """An untrained-looking model (1 step) and a trained one (100 steps), with their labels files."""
    root = tmp_path_factory.mktemp("models")
    return {
        name: course.ensure_retrained_model(stamps_dir, root / name, steps=steps)
        for name, steps in (("weak", 1), ("strong", 100))
    }


def run(models, a, b, stamps_dir, split="test"):
    return compare.compare(
        models[a]["graph"], models[b]["graph"], stamps_dir, models[a]["labels"], models[b]["labels"], split
    )


def answers(model, records):
    """The model's top answer for each record, labelled here without tlcourse.compare."""
    results = label.label_images([record.path for record in records], model["graph"], model["labels"], top_k=1)
    return [result.top[0][0] for result in results]


def test_every_count_is_that_of_the_two_models_answers_on_the_same_images(models, stamps_dir):
    records = scan_dataset(stamps_dir).split("test")
    truth = [record.label for record in records]
    weak, strong = answers(models["weak"], records), answers(models["strong"], records)
    right_weak = np.equal(weak, truth)
    right_strong = np.equal(strong, truth)
    comparison = run(models, "weak", "strong", stamps_dir)
    assert comparison.accuracy_a.correct == right_weak.sum() and comparison.accuracy_b.correct == right_strong.sum()
    assert comparison.accuracy_a.total == comparison.accuracy_b.total == len(records) == 13
    assert (comparison.paired.only_a, comparison.paired.only_b) == (
        int(np.sum(right_weak & ~right_strong)),
        int(np.sum(right_strong & ~right_weak)),
    )
    expected = [(r.path, r.label, a, b) for r, a, b in zip(records, weak, strong, strict=True) if a != b]
    assert [(d.path, d.label, d.a, d.b) for d in comparison.disagreements] == expected
    assert comparison.verdict == "B is better", comparison.summary()


def test_the_verdict_follows_the_order_of_the_models_and_a_model_equals_itself(models, stamps_dir):
    forward = run(models, "weak", "strong", stamps_dir)
    backward = run(models, "strong", "weak", stamps_dir)
    assert backward.verdict == "A is better"
    assert backward.paired.difference.value == pytest.approx(-forward.paired.difference.value)
    itself = run(models, "strong", "strong", stamps_dir)
    assert itself.verdict == "within noise" and itself.disagreements == []
    assert itself.paired.difference.value == 0 and itself.paired.p_value == 1


@pytest.mark.parametrize(
    "right_a, right_b, verdict",
    [
        ([1] * 10 + [0] * 3, [1] * 11 + [0] * 2, "within noise"),  # B ahead by one image of 13: noise
        ([0] * 10 + [1] * 3, [1] * 10 + [0] * 3, "B is better"),
        ([1] * 10 + [0] * 3, [0] * 10 + [1] * 3, "A is better"),
        ([1, 0] * 20, [0, 1] * 20, "within noise"),  # the same accuracy, every answer different
    ],
)
def test_the_verdict_is_the_paired_interval_not_the_sign_of_the_difference(right_a, right_b, verdict):
    a, b = np.array(right_a, bool), np.array(right_b, bool)
    comparison = compare.Comparison(
        models={"a": "a.pb", "b": "b.pb"},
        split="test",
        accuracy_a=stats.bootstrap_interval(a),
        accuracy_b=stats.bootstrap_interval(b),
        paired=stats.paired_comparison(a, b),
        disagreements=[],
        skipped={},
    )
    assert comparison.verdict == verdict
    assert f"verdict: {verdict}" in comparison.summary()


def test_the_command_prints_the_verdict_and_each_disagreement_and_json(models, stamps_dir, capsys):
    arguments = [
        str(models["weak"]["graph"]),
        str(models["strong"]["graph"]),
        f"--image_dir={stamps_dir}",
        f"--labels_a={models['weak']['labels']}",
        f"--labels_b={models['strong']['labels']}",
        "--split=test",
    ]
    comparison = run(models, "weak", "strong", stamps_dir)
    assert compare.main(arguments) == 0
    text = capsys.readouterr().out
    assert "verdict: B is better" in text
    assert f"images where they disagree: {len(comparison.disagreements)}" in text
    assert all(f"{d.path}  label={d.label}  A={d.a}  B={d.b}" in text for d in comparison.disagreements)
    assert compare.main([*arguments, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(comparison.to_json()))
    assert printed["verdict"] == "B is better" and printed["difference"]["total"] == 13


def test_a_label_folder_one_model_does_not_know_is_an_error_naming_it(models, stamps_dir, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in ["birds", "bovines", "flowers", "fruit", "pets"]))
    arguments = [str(models["weak"]["graph"]), str(models["strong"]["graph"]), f"--image_dir={stamps_dir}"]
    code = compare.main([*arguments, f"--labels_a={models['weak']['labels']}", f"--labels_b={labels}"])
    error = capsys.readouterr().err
    assert code == 1 and f"{labels} has no label 'vegetables'" in error and "Traceback" not in error
