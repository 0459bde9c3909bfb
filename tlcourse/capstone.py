"""The capstone: a whole project on your own folder, one file per step, and a checker.

A project is a folder (``runs/capstone`` by default) where each step of
``notebooks/15_capstone.ipynb`` leaves one file; your own image folder is only read:

1. ``audit.json`` and ``images/``: what ``audit`` found (files the scan skipped: unreadable,
   oversized, copies; near-copies across the split; likely wrong labels), what you dropped or kept
   and why. ``images/`` is a copy of your labels' images without those you dropped, and without
   the labels you set aside as unknown images.
2. ``learning_curve.json``: validation accuracy against images per label, with intervals, all the
   images against half of them (a paired comparison), and your answer: are more images worth it?
3. ``model/``: what ``retrain.py --recipe=auto`` wrote (``retrain_config``): the recipe chosen on
   validation, its test accuracy (the one look at test), an int8 TFLite model beside it.
4. ``threshold.json``: calibration on validation, and the threshold for unknown images chosen on
   validation (known images against the labels set aside), then its counts on test.
5. ``int8.json``: how often the int8 model gives the float model's answer, on validation images.
6. ``MODEL_CARD.md``: the card you write (``start_card`` writes its headings).

``check(project)`` reads them all and returns what is missing or inconsistent, one sentence each.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlcourse import calibration, config, stats
from tlcourse.atomic import atomic_path
from tlcourse.data import SPLITS, Dataset, scan_dataset
from tlcourse.download import file_hash
from tlcourse.errors import TLCourseError

AUDIT = "audit.json"
IMAGES = "images"
CURVE = "learning_curve.json"
MODEL = "model"
GRAPH = "model.pb"  # retrain writes model.keras, model.report.json, ... beside it (``model_paths``)
LABELS = "labels.txt"
INT8_MODEL = "model_int8.tflite"
THRESHOLD = "threshold.json"
INT8 = "int8.json"
CARD = "MODEL_CARD.md"
ANSWERS = ("yes", "no")
BLANK = "___"
MIN_REASON_WORDS = 3  # "looks like a shirt" is a reason; "ok" is not
MIN_LIMITS_WORDS = 20
# The card's sections, each with what it must say (``check`` names the numbers it looks for).
CARD_SECTIONS = {
    "Data": "where the images come from, how many per label, what you dropped and why, and whether more would pay",
    "Recipe": "the recipe chosen on validation, and its validation accuracy",
    "Test accuracy": "the test accuracy with its 95% interval, measured once",
    "Weak spots": "the labels the model gets wrong most often (test recall), and what they are confused with",
    "Calibration": "the expected calibration error on validation, and what it means for the scores",
    "Unknown images": "the threshold chosen on validation, and what it rejects and loses on test",
    "int8": "how often the int8 model agrees with the float one",
    "Known limits": "what the model was not tested on, and where it should not be used",
}


class CapstoneError(TLCourseError, ValueError):
    """A capstone step given something it cannot use; the message says what to do."""


def default_project() -> Path:
    return config.project_root() / "runs" / "capstone"


def key(record) -> str:
    """How the project names an image: ``label/path inside the label folder``."""
    return f"{record.label}/{record.relative}"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, content: dict) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def model_paths(project: str | Path) -> dict[str, Path]:
    """The files step 3 writes in ``model/``, named as ``retrain`` names them; "int8" is the int8 TFLite model."""
    from tlcourse import formats

    folder = Path(project) / MODEL
    paths = formats.output_paths(folder / GRAPH, folder / LABELS, output_tflite=folder / INT8_MODEL)
    paths["int8"] = paths.pop("tflite")
    return paths


# --- 1. Audit ------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What the audit found in a folder; ``flagged`` are the images you decide on."""

    source: str
    near_copy_threshold: float
    skipped: list[dict]  # {"image", "reason"}: left out by the scan already (unreadable, oversized, copies)
    leaks: list[dict]  # {"image", "split", "copy_of", "copy_split", "cosine"}: near-copies across the split
    suspects: list[dict]  # {"image", "label", "loss"}: training images whose label a layer trained without them doubts
    unknown_labels: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        """The images that need your decision: the held-out side of each leak, and each suspect."""
        return list(dict.fromkeys([leak["image"] for leak in self.leaks] + [s["image"] for s in self.suspects]))

    def summary(self) -> str:
        lines = [f"{len(self.skipped)} file(s) skipped by the scan (unreadable, oversized, exact copies):"]
        lines += [f"  {item['image']}: {item['reason']}" for item in self.skipped]
        lines.append(f"{len(self.leaks)} near-copies across the split (cosine >= {self.near_copy_threshold}):")
        lines += [
            f"  {leak['image']} ({leak['split']}) ~ {leak['copy_of']} ({leak['copy_split']}), "
            f"cosine {leak['cosine']:.3f}"
            for leak in self.leaks
        ]
        lines.append(f"{len(self.suspects)} likely wrong labels (largest out-of-fold loss first):")
        lines += [f"  {s['image']}: loss {s['loss']:.1f}" for s in self.suspects]
        return "\n".join(lines)


def audit(
    dataset: Dataset,
    backbone,
    bottleneck_dir=None,
    near_copy_threshold: float = 0.95,
    num_suspects: int = 8,
    unknown_labels=(),
) -> Audit:
    """Look for what would spoil the project, with the course's own tools.

    Unreadable, oversized and byte-identical files: what ``scan_dataset`` skipped (lesson 01).
    Leaks: pairs of images in different splits whose bottlenecks have a cosine of at least
    ``near_copy_threshold`` (``find_near_duplicates``, lesson 06). Likely wrong labels: the
    ``num_suspects`` training images of the largest out-of-fold loss (lesson 06). The labels in
    ``unknown_labels`` are audited too: they will choose and test the threshold for unknown images.
    """
    from tlcourse import bottlenecks, your_data

    missing = sorted(set(unknown_labels) - set(dataset.class_names))
    if missing:
        raise CapstoneError(f"{dataset.root}: no label folder {', '.join(missing)} to set aside as unknown images")
    if len(dataset.class_names) - len(set(unknown_labels)) < 2:
        raise CapstoneError(f"{dataset.root}: set aside fewer labels as unknown; at least 2 must stay to learn")
    splits = bottlenecks.cached_splits(dataset, backbone, bottleneck_dir)
    leaks = find_leaks(your_data.join(*(splits[name] for name in SPLITS)), near_copy_threshold)
    training = splits["train"]
    losses = your_data.out_of_fold_losses(training.vectors, training.labels, len(dataset.class_names))
    suspects = [
        {"image": key(training.records[i]), "label": training.records[i].label, "loss": float(losses[i])}
        for i in np.argsort(-losses, kind="stable")[:num_suspects]
    ]
    skipped = [{"image": str(item.path), "reason": item.reason} for item in dataset.skipped]
    return Audit(str(dataset.root), near_copy_threshold, skipped, leaks, suspects, sorted(unknown_labels))


def show_flagged(found: Audit, dataset: Dataset, count: int = 12):
    """The flagged images (the first ``count``), each titled with its label and why it was flagged."""
    import matplotlib.pyplot as plt

    from tlcourse.images import load_image

    paths = {key(record): record.path for record in dataset.images}
    why = {leak["image"]: f"near-copy of {leak['copy_of']} ({leak['copy_split']})" for leak in found.leaks}
    why.update({s["image"]: f"out-of-fold loss {s['loss']:.1f}" for s in found.suspects if s["image"] not in why})
    shown = found.flagged[:count]
    columns = max(1, min(len(shown), 4))
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.6, rows * 2.8), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image in zip(axes.flat, shown, strict=False):
        axis.imshow(load_image(paths[image]))
        axis.set_title(f"{image}\n{why[image]}", fontsize="x-small")
    figure.tight_layout()
    return figure


def find_leaks(everything, threshold: float) -> list[dict]:
    """Pairs of images of different splits whose vectors have a cosine of at least ``threshold``
    (``find_near_duplicates``); each names the copy further from training (test, then validation)."""
    from tlcourse.exercises.data_quality import find_near_duplicates

    order = {name: position for position, name in enumerate(SPLITS)}  # train < validation < test
    unit = everything.vectors / np.linalg.norm(everything.vectors, axis=1, keepdims=True)
    leaks = []
    for i, j in find_near_duplicates(everything.vectors, threshold):
        a, b = everything.records[i], everything.records[j]
        if a.split != b.split:
            held, other = (a, b) if order[a.split] > order[b.split] else (b, a)
            leaks.append(
                {
                    "image": key(held),
                    "split": held.split,
                    "copy_of": key(other),
                    "copy_split": other.split,
                    "cosine": float(unit[i] @ unit[j]),
                }
            )
    return leaks


def _check_decisions(dataset: Dataset, drop: dict, keep: dict) -> None:
    names = {key(record) for record in dataset.images}
    for kind, decisions in (("drop", drop), ("keep", keep)):
        for image, reason in decisions.items():
            if image not in names:
                raise CapstoneError(
                    f"{kind}: {image!r} is not an image of {dataset.root}; write it as 'label/file name', "
                    "as the audit prints it"
                )
            if not isinstance(reason, str) or not reason.strip():
                raise CapstoneError(f"{kind}: say why for {image!r} (a short sentence)")
    both = sorted(set(drop) & set(keep))
    if both:
        raise CapstoneError(f"{', '.join(both)}: in both drop and keep; decide one")


def apply_decisions(project, dataset: Dataset, found: Audit, drop: dict, keep: dict) -> Dataset:
    """Write ``images/`` (your labels' images without those in ``drop``) and ``audit.json``.

    ``drop`` and ``keep`` map images (``label/file``, as the audit names them) to why. Your folder is
    only read; ``images/`` is rebuilt whole, so a run killed midway leaves the previous copy.
    Returns the scanned copy, which the later steps train and measure on.
    """
    _check_decisions(dataset, drop, keep)
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    unknown = set(found.unknown_labels)
    kept = [r for r in dataset.images if key(r) not in drop and r.label not in unknown]
    with atomic_path(project / IMAGES) as folder:
        folder.mkdir()
        for record in kept:
            target = folder / record.label / record.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record.path, target)
    content = asdict(found)
    content.update(
        drop=dict(drop),
        keep=dict(keep),
        kept_images=len(kept),
        unknown_images=sum(1 for r in dataset.images if r.label in unknown and key(r) not in drop),
        validation_percentage=dataset.validation_percentage,
        testing_percentage=dataset.testing_percentage,
    )
    _write_json(project / AUDIT, content)
    return scan_dataset(project / IMAGES, dataset.validation_percentage, dataset.testing_percentage)


def unknown_images(project, dataset: Dataset, split: str) -> list:
    """The images of the labels set aside as unknown (``audit.json``), not dropped, of one split."""
    found = _read_json(Path(project) / AUDIT)
    return [r for r in dataset.split(split) if r.label in found["unknown_labels"] and key(r) not in found["drop"]]


# --- 2. Learning curve ---------------------------------------------------------------------------


def learning_curve(project, splits: dict, class_names: list[str], sizes=(2, 5, 10, 20, None), seeds=(0, 1)) -> dict:
    """Validation accuracy against training images per label (``your_data.learning_curve``), each
    point with the 95% interval of its first draw; then all the training images against half of
    each label's, paired on the same validation images. Writes ``learning_curve.json``."""
    from tlcourse import train, your_data

    training, validation = splits["train"], splits["validation"]
    if not len(validation):
        raise CapstoneError("the learning curve is measured on validation images, and there are none")
    points = your_data.learning_curve(training, validation, len(class_names), sizes, seeds)
    rows = your_data.summarize_curve(points)
    for row in rows:
        first = next(p for p in points if p.per_label == row["per_label"])
        row["interval"] = stats.bootstrap_interval(np.arange(first.total) < first.correct).to_json()
    per_label = np.bincount(training.labels, minlength=len(class_names))
    half = max(1, int(np.median(per_label[per_label > 0])) // 2)
    right = {}
    for name, size in (("half", half), ("all", None)):
        chosen = your_data.take(training, your_data.per_label_sample(training.labels, size, seed=0))
        layer = train.fit_linear(chosen.vectors, chosen.labels, len(class_names))
        right[name] = your_data.accuracy_of(layer, validation)
    doubling = stats.paired_comparison(right["half"], right["all"])
    content = {
        "evaluated_on": "validation",
        "images": sum(len(split) for split in splits.values()),  # to tell a curve of an earlier images/ copy
        "rows": rows,
        "half_per_label": half,
        "all_minus_half": doubling.to_json(),
        "answer": None,
        "why": "",
    }
    _write_json(Path(project) / CURVE, content)
    return content


def answer_learning_curve(project, answer: str | None, why: str) -> None:
    """Record your answer in ``learning_curve.json``: are more images worth collecting ("yes"/"no"), and why."""
    path = Path(project) / CURVE
    if not path.is_file():
        raise CapstoneError(f"{path} is missing: run capstone.learning_curve first")
    if answer is not None and answer not in ANSWERS:
        raise CapstoneError(f"answer 'yes' or 'no' (or None for not yet), not {answer!r}")
    content = _read_json(path)
    content.update(answer=answer, why=why)
    _write_json(path, content)


# --- 3. The recipe, chosen on validation ---------------------------------------------------------


def retrain_config(project, time_budget: float, **settings):
    """``retrain.py --recipe=auto`` on ``images/``, writing ``model/`` with an int8 TFLite model.

    ``settings`` are more ``RetrainConfig`` fields (for example ``how_many_training_steps`` of the
    first recipe, or ``fine_tune_epochs``).
    """
    from tlcourse import retrain

    project = Path(project)
    paths = model_paths(project)
    paths["graph"].parent.mkdir(parents=True, exist_ok=True)
    found = _read_json(project / AUDIT) if (project / AUDIT).is_file() else {}
    return retrain.RetrainConfig(
        image_dir=project / IMAGES,
        output_graph=paths["graph"],
        output_labels=paths["labels"],
        output_tflite=paths["int8"],
        tflite_quantization="int8",
        summaries_dir="",
        recipe="auto",
        time_budget=time_budget,
        validation_percentage=found.get("validation_percentage", 10.0),
        testing_percentage=found.get("testing_percentage", 10.0),
        **settings,
    )


def test_accuracy(report: dict) -> stats.Interval:
    """The test accuracy that ``retrain`` measured once, with its 95% interval."""
    total = report["num_images"]
    correct = round(report["accuracy"] * total)
    return stats.bootstrap_interval(np.arange(total) < correct)


def weakest_labels(report: dict, count: int = 2) -> list[tuple[str, float]]:
    """The ``count`` labels of the lowest test recall, from ``retrain``'s report."""
    recalls = {name: value for name, value in report["per_class_accuracy"].items() if value == value}  # not nan
    return sorted(recalls.items(), key=lambda item: item[1])[:count]


# --- 4. Calibration and the threshold for unknown images -----------------------------------------


def _scores(records, project) -> tuple[np.ndarray, list[str]]:
    """Probabilities [N, labels] of the float model (``model.keras``) for ``records``, and its labels."""
    from tlcourse import label

    paths = model_paths(project)
    class_names = label.read_labels(paths["labels"])
    results = label.label_images([r.path for r in records], paths["keras"], paths["labels"], top_k=len(class_names))
    failed = [str(result.path) for result in results if result.error]
    if failed:
        raise CapstoneError(f"could not label {', '.join(failed)}: drop them in step 1")
    probabilities = np.array([[dict(result.top)[name] for name in class_names] for result in results])
    return probabilities.reshape(len(records), len(class_names)), class_names


def choose_threshold(project, images: Dataset, unknown: dict[str, list]) -> dict:
    """Calibration and the unknown-image threshold, chosen on validation; then its counts on test.

    ``images`` is the scanned ``images/`` copy; ``unknown`` maps "validation" and "test" to images
    of none of the labels (``unknown_images``). Writes ``threshold.json``.
    """
    known = {split: images.split(split) for split in ("validation", "test")}
    for split in known:
        if not known[split] or not unknown[split]:
            raise CapstoneError(f"a threshold needs known and unknown {split} images; set aside a bigger unknown label")
    top = {}
    for split in known:
        probabilities, class_names = _scores(known[split], project)
        if split == "validation":
            labels = np.array([class_names.index(r.label) for r in known[split]])
            ece = calibration.expected_calibration_error(probabilities, labels)
        top[("known", split)] = calibration.top_probability(probabilities)
        top[("unknown", split)] = calibration.top_probability(_scores(unknown[split], project)[0])
    threshold = calibration.choose_threshold(top[("known", "validation")], top[("unknown", "validation")])
    content = {
        "chosen_on": "validation",
        "model_sha256": file_hash(model_paths(project)["keras"]),
        "expected_calibration_error": ece,
        "threshold": threshold,
        "validation_scores": {kind: top[(kind, "validation")].tolist() for kind in ("known", "unknown")},
    }
    for split in known:
        counts = calibration.threshold_counts(threshold, top[("known", split)], top[("unknown", split)])
        content[split] = asdict(counts)
    _write_json(Path(project) / THRESHOLD, content)
    return content


# --- 5. int8 against float -----------------------------------------------------------------------


def int8_agreement(project) -> dict:
    """How often the int8 TFLite model gives the float model's top answer, on ``images/`` validation
    images (``tlcourse.compare``: a decision to ship int8 is made on validation). Writes ``int8.json``."""
    from tlcourse import compare

    project = Path(project)
    paths = model_paths(project)
    found = _read_json(project / AUDIT)
    comparison = compare.compare(
        paths["keras"],
        paths["int8"],
        project / IMAGES,
        paths["labels"],
        paths["labels"],
        split="validation",
        validation_percentage=found["validation_percentage"],
        testing_percentage=found["testing_percentage"],
    )
    total = comparison.paired.difference.total
    content = {
        "split": "validation",
        "model_sha256": file_hash(paths["keras"]),
        "int8_sha256": file_hash(paths["int8"]),
        "images": total,
        "agree": total - len(comparison.disagreements),
        "float_accuracy": comparison.accuracy_a.to_json(),
        "int8_accuracy": comparison.accuracy_b.to_json(),
        "disagreements": [item.to_json() for item in comparison.disagreements],
    }
    _write_json(project / INT8, content)
    return content


# --- 6. The model card ---------------------------------------------------------------------------


def start_card(project) -> Path:
    """Write ``MODEL_CARD.md`` with its headings and blanks to fill, unless it exists (yours is never overwritten)."""
    path = Path(project) / CARD
    if not path.exists():
        lines = ["# Model card", ""]
        for heading, what in CARD_SECTIONS.items():
            lines += [f"## {heading}", "", f"<!-- {what} -->", BLANK, ""]
        path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _sections(text: str) -> dict[str, str]:
    """Card text under each ``## heading`` (headings compared without regard to case), comments removed."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    parts = re.split(r"^##\s+(.+?)\s*$", text, flags=re.M)
    return {heading.strip().lower(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s*(%?)")


def _numbers(text: str) -> list[tuple[float, float, bool]]:
    """(value, half a unit of its last digit, written as a percentage) of every number in ``text``."""
    found = []
    for whole, decimals, percent in NUMBER.findall(text):
        value = float(whole.replace(",", "") + (f".{decimals}" if decimals else ""))
        found.append((value, 0.5 * 10.0 ** -len(decimals or ""), bool(percent)))
    return found


def _says_percentage(text: str, fraction: float) -> bool:
    """``fraction`` (0.938) written as a percentage to at least the unit (94% or 93.8%)."""
    return any(
        percent and half <= 0.5 and abs(value - 100 * fraction) <= half + 1e-9
        for value, half, percent in _numbers(text)
    )


def _says_number(text: str, value: float, decimals: int) -> bool:
    """``value`` written with at least ``decimals`` decimals (or as a percentage of it to one decimal)."""
    for number, half, percent in _numbers(text):
        if percent and half <= 0.05 and abs(number - 100 * value) <= half + 1e-9:
            return True
        if not percent and half <= 0.5 * 10.0**-decimals and abs(number - value) <= half + 1e-9:
            return True
    return False


def _says_count(text: str, count: int) -> bool:
    return any(not percent and half == 0.5 and value == count for value, half, percent in _numbers(text))


# --- The checker ---------------------------------------------------------------------------------


def check(project=None) -> list[str]:
    """Everything missing or inconsistent in the project, one sentence each (empty: complete)."""
    project = Path(project or default_project())
    if not project.is_dir():
        return [f"{project}: no project folder yet; start with step 1 (capstone.audit, then capstone.apply_decisions)"]
    problems: list[str] = []
    found = _check_audit(project, problems)
    _check_curve(project, found, problems)
    report = _check_model(project, found, problems)
    threshold = _check_threshold(project, problems)
    int8 = _check_int8(project, problems)
    _check_card(project, found, report, threshold, int8, problems)
    return problems


def summary(project=None) -> str:
    """``check``'s verdict as text for the lesson."""
    problems = check(project)
    if not problems:
        return "The project is complete: every step's file is there and the card matches what was measured."
    return f"{len(problems)} thing(s) to do:\n" + "\n".join(f"- {problem}" for problem in problems)


# What each step's file must hold for the checker to read it (a file by an earlier version, or edited by hand, may not).
REQUIRED = {
    AUDIT: ("leaks", "suspects", "unknown_labels", "drop", "keep", "kept_images"),
    CURVE: ("evaluated_on", "images", "all_minus_half", "answer", "why"),
    "model.report.json": ("accuracy", "num_images", "class_names", "per_class_accuracy", "settings", "recipe"),
    THRESHOLD: ("chosen_on", "model_sha256", "expected_calibration_error", "threshold", "validation_scores"),
    INT8: ("split", "model_sha256", "int8_sha256", "images", "agree"),
}


def _load(project: Path, path: Path, step: int, how: str, problems: list[str]) -> dict | None:
    """A step's file, or None with a problem saying it is missing, unreadable or incomplete, and ``how`` to make it."""
    name = path.relative_to(project).as_posix()
    if not path.is_file():
        problems.append(f"step {step}: {name} is missing: {how}")
        return None
    try:
        content = _read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"step {step}: {name} cannot be read ({error}); {how} again")
        return None
    missing = [field for field in REQUIRED[path.name] if not isinstance(content, dict) or field not in content]
    if missing:
        problems.append(f"step {step}: {name} has no {', '.join(missing)}; {how} again")
        return None
    return content


def _check_audit(project: Path, problems: list[str]) -> dict | None:
    found = _load(project, project / AUDIT, 1, "run capstone.audit and capstone.apply_decisions", problems)
    if found is None:
        return None
    decided = {**found["drop"], **found["keep"]}
    undecided = [
        image for image in Audit(**{k: found[k] for k in Audit.__dataclass_fields__}).flagged if image not in decided
    ]
    if undecided:
        problems.append(
            f"step 1: {len(undecided)} flagged image(s) have no decision: {', '.join(undecided)}; "
            "put each in drop or keep, with why"
        )
    for image, reason in decided.items():
        if len(reason.split()) < MIN_REASON_WORDS:
            problems.append(f"step 1: the reason for {image} ({reason!r}) is too short: say what you saw in a sentence")
    images = project / IMAGES
    present = [image for image in found["drop"] if (images / image).exists()]
    if present:
        problems.append(
            f"step 1: {', '.join(present)} dropped but still in {IMAGES}/: run capstone.apply_decisions again"
        )
    count = sum(1 for p in images.rglob("*") if p.is_file()) if images.is_dir() else 0
    if count != found["kept_images"]:
        problems.append(
            f"step 1: {IMAGES}/ holds {count} images, the audit kept {found['kept_images']}: "
            "run capstone.apply_decisions again"
        )
    return found


def _check_curve(project: Path, found: dict | None, problems: list[str]) -> None:
    curve = _load(project, project / CURVE, 2, "run capstone.learning_curve", problems)
    if curve is None:
        return
    if found is not None and curve["images"] != found["kept_images"]:
        problems.append(
            f"step 2: the curve was measured on {curve['images']} images, the audit now keeps "
            f"{found['kept_images']}: run capstone.learning_curve again"
        )
    if curve["evaluated_on"] != "validation":
        problems.append(f"step 2: the learning curve was measured on {curve['evaluated_on']}: measure it on validation")
    if curve.get("answer") not in ANSWERS:
        problems.append(
            "step 2: say whether more images are worth collecting: capstone.answer_learning_curve('yes' or 'no', why)"
        )
        return
    if len(str(curve.get("why", "")).split()) < MIN_REASON_WORDS:
        problems.append("step 2: say why, in a sentence that cites the curve")
    gain = curve["all_minus_half"]
    if curve["answer"] == "no" and gain["low"] > 0:
        problems.append(
            f"step 2: you answered 'no', but all the images beat half of them by {gain['value']:+.1%} "
            f"(interval {gain['low']:+.1%} to {gain['high']:+.1%}, above zero): the curve is still rising"
        )
    if curve["answer"] == "yes" and gain["high"] < 0:
        problems.append(
            f"step 2: you answered 'yes', but half the images did better than all of them ({gain['value']:+.1%})"
        )


def _check_model(project: Path, found: dict | None, problems: list[str]) -> dict | None:
    paths = model_paths(project)
    report = _load(project, paths["report"], 3, "run retrain with capstone.retrain_config", problems)
    if report is None:
        return None
    if Path(report["settings"]["image_dir"]).resolve() != (project / IMAGES).resolve():
        problems.append(
            f"step 3: the model was trained on {report['settings']['image_dir']}, not on the audited {IMAGES}/"
        )
    search = report.get("recipe_search")
    if not search:
        problems.append(
            "step 3: the recipe was not chosen on validation: retrain with recipe='auto' (capstone.retrain_config)"
        )
    else:
        tried = search["tried"]
        best = max(range(len(tried)), key=lambda i: (tried[i]["validation_accuracy"], -i))
        chosen = [row["recipe"] for row in tried if row["chosen"]]
        if chosen != [tried[best]["recipe"]] or report["recipe"]["name"] != tried[best]["recipe"]:
            problems.append(
                f"step 3: the model written is {report['recipe']['name']!r}, "
                f"but validation chose {tried[best]['recipe']!r}"
            )
    if found is not None:
        trained_on_unknown = sorted(set(report["class_names"]) & set(found["unknown_labels"]))
        if trained_on_unknown:
            problems.append(f"step 3: the model learnt {', '.join(trained_on_unknown)}, set aside as unknown images")
    if not paths["int8"].is_file():
        problems.append(
            f"step 3: {paths['int8'].relative_to(project)} is missing: retrain with capstone.retrain_config"
        )
    return report


def _stale(project: Path, content: dict, step: str, problems: list[str]) -> bool:
    keras = model_paths(project)["keras"]
    if keras.is_file() and content.get("model_sha256") != file_hash(keras):
        problems.append(f"step {step}: measured on an earlier model: run it again for the model in {MODEL}/")
        return True
    return False


def _check_threshold(project: Path, problems: list[str]) -> dict | None:
    content = _load(project, project / THRESHOLD, 4, "run capstone.choose_threshold", problems)
    if content is None:
        return None
    _stale(project, content, "4", problems)
    scores = content["validation_scores"]
    chosen = calibration.choose_threshold(scores["known"], scores["unknown"])
    if content["chosen_on"] != "validation" or abs(content["threshold"] - chosen) > 1e-9:
        problems.append(
            f"step 4: the threshold {content['threshold']:.3f} is not the one the validation scores choose "
            f"({chosen:.3f}): choose it on validation, with capstone.choose_threshold"
        )
    return content


def _check_int8(project: Path, problems: list[str]) -> dict | None:
    content = _load(project, project / INT8, 5, "run capstone.int8_agreement", problems)
    if content is None:
        return None
    if not _stale(project, content, "5", problems):
        int8 = model_paths(project)["int8"]
        if int8.is_file() and content["int8_sha256"] != file_hash(int8):
            problems.append("step 5: measured on an earlier int8 model: run capstone.int8_agreement again")
    if content["split"] != "validation":
        problems.append(f"step 5: agreement was measured on {content['split']}: decide on validation images")
    return content


def _check_card(project, found, report, threshold, int8, problems: list[str]) -> None:
    path = project / CARD
    if not path.is_file():
        problems.append(f"step 6: {CARD} is missing: capstone.start_card writes its headings, you write the rest")
        return
    text = path.read_text(encoding="utf-8")
    if BLANK in text:
        problems.append(f"step 6: {CARD} still has blanks ({BLANK}) to fill in")
    sections = _sections(text)
    for heading in CARD_SECTIONS:
        body = sections.get(heading.lower())
        if body is None:
            problems.append(f"step 6: {CARD} has no '## {heading}' section ({CARD_SECTIONS[heading]})")
    body = {heading: sections.get(heading.lower(), "") for heading in CARD_SECTIONS}

    def needs(heading: str, ok: bool, what: str) -> None:
        if heading.lower() in sections and not ok:
            problems.append(f"step 6: the card's '{heading}' section does not give {what}")

    if found is not None:
        needs(
            "Data",
            _says_count(body["Data"], found["kept_images"]),
            f"the number of images kept ({found['kept_images']})",
        )
    if report is not None:
        interval = test_accuracy(report)
        needs(
            "Test accuracy",
            all(_says_percentage(body["Test accuracy"], v) for v in (interval.value, interval.low, interval.high)),
            f"the test accuracy measured and its interval "
            f"({interval.value:.1%}, {interval.low:.1%} to {interval.high:.1%})",
        )
        weakest = weakest_labels(report, 1)
        if weakest:
            name, recall = weakest[0]
            needs(
                "Weak spots",
                name in body["Weak spots"] and _says_percentage(body["Weak spots"], recall),
                f"the label of the lowest test recall, with its recall ({name}, {recall:.0%})",
            )
        rows = (report.get("recipe_search") or {}).get("tried", [])
        chosen = [row for row in rows if row["chosen"]]
        if chosen:
            needs(
                "Recipe",
                _says_percentage(body["Recipe"], chosen[0]["validation_accuracy"]),
                f"the chosen recipe's validation accuracy ({chosen[0]['validation_accuracy']:.1%})",
            )
    if threshold is not None:
        needs(
            "Calibration",
            _says_number(body["Calibration"], threshold["expected_calibration_error"], 2),
            f"the expected calibration error measured ({threshold['expected_calibration_error']:.3f})",
        )
        needs(
            "Unknown images",
            _says_number(body["Unknown images"], threshold["threshold"], 2),
            f"the threshold ({threshold['threshold']:.3f})",
        )
    if int8 is not None:
        share = int8["agree"] / int8["images"]
        needs(
            "int8",
            _says_count(body["int8"], int8["agree"]) or _says_percentage(body["int8"], share),
            f"the agreement measured ({int8['agree']} of {int8['images']} validation images)",
        )
    needs("Known limits", len(body["Known limits"].split()) >= MIN_LIMITS_WORDS, f"at least {MIN_LIMITS_WORDS} words")
