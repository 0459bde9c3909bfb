"""The capstone's checker (lesson 15): a complete project passes; each plausible omission or
inconsistency fails with its own message. The project is written by hand here, as the lesson's
steps would leave it, so no model is trained."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from tests.images_factory import labelled_folder
from tlcourse import calibration, capstone
from tlcourse.data import scan_dataset
from tlcourse.download import file_hash

KNOWN_SCORES = [0.95, 0.9, 0.8, 0.6]
UNKNOWN_SCORES = [0.4, 0.55, 0.7]


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content) if isinstance(content, dict) else content, encoding="utf-8")


def _card(project, **changes) -> str:
    report = json.loads((project / "model" / "model.report.json").read_text())
    test = capstone.test_accuracy(report)
    threshold = json.loads((project / "threshold.json").read_text())["threshold"]
    sections = {
        "Data": "Fashion photos, 9 images kept of 10: one near-copy of a training shirt dropped. More would pay.",
        "Recipe": "The tuned new layer, chosen on validation at 87.5% (the flags' layer: 80.0%).",
        "Test accuracy": f"{test.value:.1%} ({test.correct} of {test.total}; 95% interval {test.low:.1%} to "
        f"{test.high:.1%}), measured once.",
        "Weak spots": "shirt (85% recall), mostly taken for a coat.",
        "Calibration": "Expected calibration error 0.042 on validation: the scores sound about as sure as they are.",
        "Unknown images": f"Threshold {threshold:.2f}, chosen on validation; on test it rejects 4 of 5 unknown images.",
        "int8": "The int8 model gave the float model's answer on 19 of 20 validation images.",
        "Known limits": "Only studio photos of clothes on a plain background were tested; photos taken outdoors, "
        "people wearing the clothes, or other kinds of garment were never seen and should not be trusted.",
    }
    sections.update(changes)
    return "# Model card\n\n" + "".join(f"## {heading}\n\n{body}\n\n" for heading, body in sections.items())


@pytest.fixture
def project(tmp_path):
    """A complete project: every step's file, consistent with each other, and a card that matches."""
    project = tmp_path / "capstone"
    labelled_folder(project / "images", labels=("coat", "shirt"), per_label=5)
    (project / "images" / "shirt" / "3.jpg").unlink()  # dropped in the audit
    _write(
        project / "audit.json",
        {
            "source": str(tmp_path / "mine"),
            "near_copy_threshold": 0.95,
            "skipped": [],
            "leaks": [{"image": "shirt/3.jpg", "split": "test", "copy_of": "shirt/1.jpg", "copy_split": "train"}],
            "suspects": [{"image": "coat/2.jpg", "label": "coat", "loss": 5.0}],
            "unknown_labels": ["bag"],
            "drop": {"shirt/3.jpg": "a near-copy of a training shirt"},
            "keep": {"coat/2.jpg": "a real coat, seen from the back"},
            "kept_images": 9,
            "unknown_images": 5,
            "validation_percentage": 10.0,
            "testing_percentage": 10.0,
        },
    )
    _write(
        project / "learning_curve.json",
        {
            "evaluated_on": "validation",
            "images": 9,
            "rows": [],
            "half_per_label": 2,
            "all_minus_half": {"value": 0.05, "low": 0.01, "high": 0.09, "p_value": 0.03},
            "answer": "yes",
            "why": "the last doubling still gained five points, interval above zero",
        },
    )
    model = project / "model"
    _write(model / "model.keras", "float model")
    _write(model / "model_int8.tflite", "int8 model")
    _write(model / "labels.txt", "coat\nshirt\n")
    _write(
        model / "model.report.json",
        {
            "accuracy": 0.9,
            "num_images": 40,
            "class_names": ["coat", "shirt"],
            "per_class_accuracy": {"coat": 0.95, "shirt": 0.85},
            "settings": {"image_dir": str(project / "images")},
            "recipe": {"name": "tuned new layer"},
            "recipe_search": {
                "tried": [
                    {"recipe": "new layer, as the flags say", "validation_accuracy": 0.8, "chosen": False},
                    {"recipe": "tuned new layer", "validation_accuracy": 0.875, "chosen": True},
                ],
                "skipped": {},
            },
        },
    )
    threshold = calibration.choose_threshold(KNOWN_SCORES, UNKNOWN_SCORES)
    _write(
        project / "threshold.json",
        {
            "chosen_on": "validation",
            "model_sha256": file_hash(model / "model.keras"),
            "expected_calibration_error": 0.042,
            "threshold": threshold,
            "validation_scores": {"known": KNOWN_SCORES, "unknown": UNKNOWN_SCORES},
        },
    )
    _write(
        project / "int8.json",
        {
            "split": "validation",
            "model_sha256": file_hash(model / "model.keras"),
            "int8_sha256": file_hash(model / "model_int8.tflite"),
            "images": 20,
            "agree": 19,
        },
    )
    _write(project / "MODEL_CARD.md", _card(project))
    return project


def _edit(path, **changes):
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


def test_a_complete_project_passes(project):
    assert capstone.check(project) == []
    assert "complete" in capstone.summary(project)


def test_the_threshold_of_the_complete_project_is_a_real_choice(project):
    # The hand-written project must not pass because every threshold would: 0.5 must fail (below).
    assert abs(json.loads((project / "threshold.json").read_text())["threshold"] - 0.5) > 0.05


def _remove(name):
    return lambda p: (p / name).unlink() if (p / name).is_file() else shutil.rmtree(p / name)


def _card_with(**changes):
    return lambda p: (p / "MODEL_CARD.md").write_text(_card(p, **changes))


BREAKAGES = {
    # step 1: the audit and your decisions
    "no audit": (_remove("audit.json"), "step 1: audit.json is missing"),
    "a flag without a decision": (
        lambda p: _edit(p / "audit.json", keep={}),
        "1 flagged image(s) have no decision: coat/2.jpg",
    ),
    "a reason too short": (
        lambda p: _edit(p / "audit.json", keep={"coat/2.jpg": "fine"}),
        "the reason for coat/2.jpg ('fine') is too short",
    ),
    "a dropped image still in the copy": (
        lambda p: shutil.copyfile(p / "images" / "shirt" / "1.jpg", p / "images" / "shirt" / "3.jpg"),
        "shirt/3.jpg dropped but still in images/",
    ),
    "a copy of another size than the audit kept": (
        lambda p: (p / "images" / "coat" / "4.jpg").unlink(),
        "images/ holds 8 images, the audit kept 9",
    ),
    "an audit file damaged by hand": (
        lambda p: (p / "audit.json").write_text('{"drop": '),
        "step 1: audit.json cannot be read (",
    ),
    # step 2: the learning curve and your answer
    "no learning curve": (_remove("learning_curve.json"), "step 2: learning_curve.json is missing"),
    "a curve of an earlier copy": (
        lambda p: _edit(p / "learning_curve.json", images=10),
        "step 2: the curve was measured on 10 images, the audit now keeps 9",
    ),
    "a curve measured on test": (
        lambda p: _edit(p / "learning_curve.json", evaluated_on="test"),
        "the learning curve was measured on test",
    ),
    "no answer": (lambda p: _edit(p / "learning_curve.json", answer=None), "say whether more images are worth"),
    "an answer without why": (lambda p: _edit(p / "learning_curve.json", why="yes"), "say why, in a sentence"),
    "'no' while the curve still rises": (
        lambda p: _edit(p / "learning_curve.json", answer="no"),
        "you answered 'no', but all the images beat half of them by +5.0%",
    ),
    # step 3: the recipe chosen on validation, test once
    "no model": (_remove("model"), "step 3: model/model.report.json is missing"),
    "one recipe, not a choice on validation": (
        lambda p: _edit(p / "model" / "model.report.json", recipe_search=None),
        "the recipe was not chosen on validation",
    ),
    "the model written is not validation's choice": (
        lambda p: _edit(p / "model" / "model.report.json", recipe={"name": "new layer, as the flags say"}),
        "but validation chose 'tuned new layer'",
    ),
    "trained on another folder than the audited copy": (
        lambda p: _edit(p / "model" / "model.report.json", settings={"image_dir": str(p.parent / "mine")}),
        "not on the audited images/",
    ),
    "trained on the unknown images": (
        lambda p: _edit(p / "model" / "model.report.json", class_names=["bag", "coat", "shirt"]),
        "the model learnt bag, set aside as unknown images",
    ),
    "no int8 model": (
        lambda p: (p / "model" / "model_int8.tflite").unlink(),
        "model/model_int8.tflite is missing",
    ),
    # step 4: the threshold chosen on validation
    "a curve file of an earlier version": (
        lambda p: (p / "learning_curve.json").write_text('{"evaluated_on": "validation", "rows": []}'),
        "step 2: learning_curve.json has no images, all_minus_half, answer, why; run capstone.learning_curve again",
    ),
    "a damaged threshold file": (
        lambda p: (p / "threshold.json").write_bytes(b"\xff\xfe"),
        "step 4: threshold.json cannot be read (",
    ),
    "no threshold": (_remove("threshold.json"), "step 4: threshold.json is missing"),
    "a threshold set by hand": (
        lambda p: _edit(p / "threshold.json", threshold=0.5),
        "the threshold 0.500 is not the one the validation scores choose",
    ),
    "a threshold chosen on test": (
        lambda p: _edit(p / "threshold.json", chosen_on="test"),
        "is not the one the validation scores choose",
    ),
    # step 5: int8 agreement
    "no agreement": (_remove("int8.json"), "step 5: int8.json is missing"),
    "agreement measured on test": (lambda p: _edit(p / "int8.json", split="test"), "agreement was measured on test"),
    "agreement of an earlier int8 model": (
        lambda p: (p / "model" / "model_int8.tflite").write_text("int8, converted again"),
        "step 5: measured on an earlier int8 model",
    ),
    # step 6: the card
    "no card": (_remove("MODEL_CARD.md"), "step 6: MODEL_CARD.md is missing"),
    "blanks left": (_card_with(**{"Known limits": capstone.CARD_SECTIONS["Data"] + " ___"}), "still has blanks"),
    "a section missing": (
        lambda p: (p / "MODEL_CARD.md").write_text(_card(p).replace("## Calibration", "Calibration")),
        "has no '## Calibration' section",
    ),
    "another test accuracy": (
        _card_with(**{"Test accuracy": "92.0% (95% interval 80.0% to 97.0%)"}),
        "does not give the test accuracy measured and its interval (90.0%",
    ),
    "the test accuracy without its interval": (
        _card_with(**{"Test accuracy": "90.0% on the test images, measured once."}),
        "does not give the test accuracy measured and its interval",
    ),
    "the validation accuracy given as test accuracy": (
        _card_with(**{"Test accuracy": "87.5%, measured on validation images."}),
        "does not give the test accuracy measured",
    ),
    "the wrong weak spot": (
        _card_with(**{"Weak spots": "coat (95% recall), sometimes taken for a shirt."}),
        "the label of the lowest test recall, with its recall (shirt, 85%)",
    ),
    "another recipe's validation accuracy": (
        _card_with(**{"Recipe": "The tuned new layer, chosen on validation at 80.0%."}),
        "the chosen recipe's validation accuracy (87.5%)",
    ),
    "another calibration error": (
        _card_with(**{"Calibration": "Expected calibration error 0.12 on validation."}),
        "the expected calibration error measured (0.042)",
    ),
    "another threshold": (
        _card_with(**{"Unknown images": "Threshold 0.50, chosen on validation."}),
        "does not give the threshold (0.",
    ),
    "the threshold given without decimals": (
        _card_with(**{"Unknown images": "Threshold 1, chosen on validation."}),
        "does not give the threshold",
    ),
    "another agreement": (
        _card_with(int8="The int8 model agreed on 18 of 20 validation images."),
        "the agreement measured (19 of 20 validation images)",
    ),
    "known limits in a few words": (
        _card_with(**{"Known limits": "Not tested outdoors."}),
        "'Known limits' section does not give at least 20 words",
    ),
    "the number of images kept missing": (
        _card_with(Data="Fashion photos, most of them kept; one near-copy dropped."),
        "the number of images kept (9)",
    ),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_each_omission_or_inconsistency_fails_with_its_own_message(project, name):
    breakage, expected = BREAKAGES[name]
    breakage(project)
    problems = capstone.check(project)
    assert any(expected in problem for problem in problems), problems
    assert not capstone.summary(project).startswith("The project is complete")


def test_a_model_trained_again_makes_the_threshold_and_the_agreement_stale(project):
    (project / "model" / "model.keras").write_text("a float model trained again")
    problems = capstone.check(project)
    assert "step 4: measured on an earlier model: run it again for the model in model/" in problems
    assert "step 5: measured on an earlier model: run it again for the model in model/" in problems


def test_the_checker_reads_the_files_step_3_writes(tmp_path):
    """retrain, run with the step's config, writes each file where the checker and the later steps look."""
    written = capstone.retrain_config(tmp_path, time_budget=1).output_paths()
    looked_at = capstone.model_paths(tmp_path)
    assert written["tflite"] == looked_at.pop("int8") == tmp_path / "model" / "model_int8.tflite"
    assert looked_at == {name: path for name, path in written.items() if name != "tflite"}
    assert looked_at["report"] == tmp_path / "model" / "model.report.json"


def test_no_project_folder_says_where_to_start(tmp_path):
    (problem,) = capstone.check(tmp_path / "nothing")
    assert problem == f"{tmp_path / 'nothing'}: no project folder yet; start with step 1 (capstone.audit, then " + (
        "capstone.apply_decisions)"
    )


def test_an_empty_project_lists_every_step(tmp_path):
    problems = capstone.check(tmp_path)
    assert [problem.split(":")[0] for problem in problems] == [f"step {n}" for n in range(1, 7)]


def test_start_card_writes_the_headings_and_never_overwrites_yours(tmp_path):
    card = capstone.start_card(tmp_path)
    text = card.read_text()
    assert all(f"## {heading}" in text for heading in capstone.CARD_SECTIONS) and capstone.BLANK in text
    assert any("still has blanks" in problem for problem in capstone.check(tmp_path))
    card.write_text("# My own card\n")
    capstone.start_card(tmp_path)
    assert card.read_text() == "# My own card\n"


def test_numbers_in_the_card_are_read_as_written():
    assert capstone._says_percentage("accuracy 93.8%", 0.938) and capstone._says_percentage("about 94 %", 0.938)
    assert not capstone._says_percentage("accuracy 93.8", 0.938)  # a percentage needs its sign
    assert not capstone._says_percentage("accuracy 92.8%", 0.938)
    assert capstone._says_number("ECE 0.042", 0.042, 2) and capstone._says_number("ECE 4.2%", 0.042, 2)
    assert not capstone._says_number("ECE 0", 0.042, 2)  # no decimals: too coarse to match anything
    assert capstone._says_count("1,180 images", 1180) and not capstone._says_count("1,180.5 images", 1180)
    assert not capstone._says_count("int8 model", 8)  # a digit inside a word is not a number


def _records(specs):
    return [SimpleNamespace(label=label, relative=name, split=split) for label, name, split in specs]


def test_a_leak_names_the_copy_further_from_training():
    records = _records([("a", "1.jpg", "train"), ("a", "2.jpg", "test"), ("b", "3.jpg", "validation")])
    records += _records([("b", "4.jpg", "test"), ("b", "5.jpg", "validation"), ("b", "6.jpg", "validation")])
    vectors = np.array([[1, 0, 0], [1, 0.05, 0], [0, 1, 0], [0, 1, 0.05], [0, 0, 1], [0, 0.02, 1]], float)
    leaks = capstone.find_leaks(SimpleNamespace(vectors=vectors, records=records), 0.99)
    assert [(leak["image"], leak["copy_of"]) for leak in leaks] == [("a/2.jpg", "a/1.jpg"), ("b/4.jpg", "b/3.jpg")]
    assert all(0.99 <= leak["cosine"] <= 1.0 for leak in leaks)  # the two validation images are not a leak


def _audit(dataset, unknown_labels=("c",)):
    return capstone.Audit(str(dataset.root), 0.95, [], [], [], list(unknown_labels))


def test_apply_decisions_copies_the_kept_images_and_leaves_your_folder_alone(tmp_path):
    mine = labelled_folder(tmp_path / "mine", labels=("a", "b", "c"), per_label=6)
    before = sorted(p.relative_to(mine) for p in mine.rglob("*"))
    dataset = scan_dataset(mine)
    images = capstone.apply_decisions(tmp_path / "project", dataset, _audit(dataset), {"a/1.jpg": "blurred"}, {})
    assert sorted(p.relative_to(mine) for p in mine.rglob("*")) == before
    assert images.class_names == ["a", "b"] and len(images.images) == 11
    assert not (tmp_path / "project" / "images" / "a" / "1.jpg").exists()
    moved = {capstone.key(r): r.split for r in images.images}
    assert all(moved[capstone.key(r)] == r.split for r in dataset.images if capstone.key(r) in moved)
    assert len(capstone.unknown_images(tmp_path / "project", dataset, "train")) == len(
        [r for r in dataset.split("train") if r.label == "c"]
    )


@pytest.mark.parametrize(
    ("drop", "keep", "message"),
    [
        ({"a/99.jpg": "gone"}, {}, "drop: 'a/99.jpg' is not an image of"),
        ({}, {"a/1.jpg": " "}, "keep: say why for 'a/1.jpg'"),
        ({"a/1.jpg": "blurred"}, {"a/1.jpg": "sharp enough"}, "a/1.jpg: in both drop and keep"),
    ],
)
def test_apply_decisions_refuses_decisions_it_cannot_use(tmp_path, drop, keep, message):
    dataset = scan_dataset(labelled_folder(tmp_path / "mine", labels=("a", "b", "c"), per_label=6))
    with pytest.raises(capstone.CapstoneError, match=message):
        capstone.apply_decisions(tmp_path / "project", dataset, _audit(dataset), drop, keep)
    assert not (tmp_path / "project" / "images").exists()


def test_answer_learning_curve_takes_yes_or_no(project):
    with pytest.raises(capstone.CapstoneError, match="answer 'yes' or 'no'"):
        capstone.answer_learning_curve(project, "maybe", "the validation split is small")
    capstone.answer_learning_curve(project, "no", "the curve is flat from 10 images a label")
    assert any("you answered 'no'" in problem for problem in capstone.check(project))
