"""label_image.py --threshold: "unknown" when the top score is not above P, for every model format."""

import json

import pytest

from tests.images_factory import labelled_folder
from tlcourse import label, retrain

FORMATS = ("g.pb", "g.keras", "saved")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small retrained model in all three formats, and a few images to label."""
    root = tmp_path_factory.mktemp("threshold")
    images = labelled_folder(root / "images", per_label=8)
    settings = retrain.RetrainConfig(
        image_dir=images,
        bottleneck_dir=root / "bn",
        output_graph=root / "out" / "g.pb",
        output_labels=root / "out" / "labels.txt",
        saved_model_dir=root / "out" / "saved",
        how_many_training_steps=40,
        architecture="efficientnet_lite0",
    )
    retrain.retrain(settings, progress=False)
    return root / "out", sorted((images / "a").iterdir())[:3]


def run_main(capsys, model, *extra, graph="g.pb"):
    out, photos = model
    code = label.main([*map(str, photos), "--graph", str(out / graph), "--labels", str(out / "labels.txt"), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("graph", FORMATS)
def test_a_threshold_of_one_makes_every_answer_unknown(model, capsys, graph):
    code, text, _ = run_main(capsys, model, "--threshold", "1", graph=graph)
    assert code == 0
    assert text.count("  unknown (the top score is not above the threshold 1)") == 3
    code, printed, _ = run_main(capsys, model, "--threshold=1.0", "--json", graph=graph)
    answers = json.loads(printed)
    assert code == 0 and [item["unknown"] for item in answers] == [True] * 3
    assert all(len(item["top"]) == 3 for item in answers)  # the scores are still shown


@pytest.mark.parametrize("graph", FORMATS)
def test_a_threshold_of_zero_changes_nothing(model, capsys, graph):
    _, plain, _ = run_main(capsys, model, graph=graph)
    _, zero, _ = run_main(capsys, model, "--threshold", "0", graph=graph)
    assert zero == plain and "unknown" not in plain
    answers = json.loads(run_main(capsys, model, "--threshold", "0", "--json", graph=graph)[1])
    assert [item["unknown"] for item in answers] == [False] * 3
    if graph == "g.pb":
        assert "unknown" not in json.loads(run_main(capsys, model, "--json", graph=graph)[1])[0]  # no flag, no key


def test_unknown_exactly_where_the_top_score_is_not_above_the_threshold(model):
    out, photos = model
    plain = label.label_images(photos, out / "g.pb", out / "labels.txt")
    scores = sorted(result.top[0][1] for result in plain)
    threshold = (scores[0] + scores[1]) / 2  # only the least sure image falls below it
    labelled = label.label_images(photos, out / "g.pb", out / "labels.txt", top_k=1, threshold=threshold)
    for before, after in zip(plain, labelled, strict=True):
        assert after.unknown == (before.top[0][1] <= threshold)
        assert after.top[0][0] == before.top[0][0]
    assert sum(result.unknown for result in labelled) == 1


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "high", "nan"])
def test_a_bad_threshold_is_refused_with_a_clear_message(model, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        run_main(capsys, model, f"--threshold={bad}")
    assert exit_info.value.code == 2
    assert "--threshold: must be a probability between 0 and 1" in capsys.readouterr().err
    out, photos = model
    with pytest.raises(ValueError, match="probability between 0 and 1"):
        label.label_images(photos, out / "g.pb", out / "labels.txt", threshold=float(bad) if bad != "high" else bad)
