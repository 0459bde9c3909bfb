"""Exercises of the many-classes lesson (09): standardising with the training split's statistics only, and
choosing a setting on the validation split.

Each exercise is a reference solution (self-contained: ``fill_stubs`` pastes its source into a lesson) and a
grader with fixed hard cases where every classic mistake gives its own answer, whatever the seed.
"""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, as_array, as_float, describe, register

# ---------------------------------------------------------------------------------------------
# standardize (09_many_classes): the leak as the trap


def standardize(train, validation, test):
    """The three splits' bottlenecks, each feature shifted and scaled by the TRAINING split's mean and spread.

    A feature with no spread on the training images (a channel that is always 0, say) is divided by 1
    instead of 0, as scikit-learn's StandardScaler does: it becomes 0 on the training images and stays
    finite on the others. Taught in notebooks/09_many_classes.ipynb.
    """
    import numpy as np

    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)  # one number per feature (a column), over the training images (the rows)
    spread = train.std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)  # a constant feature: nothing to scale, and no 0 / 0
    return tuple((np.asarray(split, dtype=np.float64) - mean) / spread for split in (train, validation, test))


_SPLIT_NAMES = ("train", "validation", "test")
_CONSTANT, _DEAD = 5, 6  # the hard case's feature constant on the training images (1.5) and its all-zero one


def _splits(rng: np.random.Generator, sizes: tuple[int, int, int], num_features: int) -> tuple[np.ndarray, ...]:
    """Three splits whose statistics all differ: validation shifted up and wider, test shifted down and narrower.

    Spreads are far from 1 (0.2-0.4 or 3-20), so dividing by the variance or by nothing shows; the splits
    differ by more than a spread, so statistics from any split but train, or from all of them, show.
    """
    means = rng.uniform(-5.0, 5.0, num_features)
    spreads = np.where(
        rng.random(num_features) < 0.5, rng.uniform(0.2, 0.4, num_features), rng.uniform(3, 20, num_features)
    )
    shifts, widths = (0.0, 1.5, -1.0), (1.0, 2.0, 0.5)
    return tuple(
        means + shift * spreads + width * spreads * rng.standard_normal((size, num_features))
        for size, shift, width in zip(sizes, shifts, widths, strict=True)
    )


def _hard_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """40, 15 and 11 images of 7 features (so no axis mixes them up); feature 5 is 1.5 on every training
    image and varies elsewhere, feature 6 is 0 everywhere (a dead channel)."""
    train, validation, test = _splits(rng, (40, 15, 11), 7)
    train[:, _CONSTANT] = 1.5
    for split in (train, validation, test):
        split[:, _DEAD] = 0.0
    return train, validation, test


def _safe(spread):
    return np.where(spread > 0, spread, 1.0)


def _standardize_variants(train, validation, test) -> dict[str, tuple[np.ndarray, ...]]:
    """What plausible mistakes return (made finite where a spread is 0), to name the mistake a learner made."""
    splits = (train, validation, test)

    def with_stats(mean, spread):
        return tuple((split - mean) / _safe(spread) for split in splits)

    pooled = np.concatenate(splits)
    variants = {
        "pooled": with_stats(pooled.mean(axis=0), pooled.std(axis=0)),
        "separately": tuple((split - split.mean(axis=0)) / _safe(split.std(axis=0)) for split in splits),
        "validation": with_stats(validation.mean(axis=0), validation.std(axis=0)),
        "test": with_stats(test.mean(axis=0), test.std(axis=0)),
        "variance": with_stats(train.mean(axis=0), train.var(axis=0)),
        "per image": tuple(
            (split - split.mean(axis=1, keepdims=True)) / _safe(split.std(axis=1, keepdims=True)) for split in splits
        ),
        "whole array": with_stats(train.mean(), train.std()),
        "not scaled": with_stats(train.mean(axis=0), np.ones(train.shape[1])),
        "not centred": tuple(split / _safe(train.std(axis=0)) for split in splits),
        "train only": (standardize(*splits)[0], validation, test),
    }
    variants["train and validation pooled"] = with_stats(
        np.concatenate([train, validation]).mean(axis=0), np.concatenate([train, validation]).std(axis=0)
    )
    return variants


_STANDARDIZE_MESSAGES = {
    "pooled": "the mean and spread were computed over all three splits pooled. That is the leak: the validation "
    "and test images then shape how the training images are scaled, and a model in use cannot see the images it "
    "will be asked about. Compute them on the training split alone (axis 0 of `train`) and apply those same "
    "numbers to validation and test.",
    "train and validation pooled": "the mean and spread were computed over training and validation pooled: the "
    "validation images then take part in training, and stop being a fair check. Compute them on `train` alone and "
    "apply those numbers to the other two.",
    "separately": "each split was standardised with its own mean and spread. Then a feature that is higher on the "
    "test images than on the training ones is shifted back to 0, and the layer sees something it never saw in "
    "training (and one image alone, as in an app, has no spread at all). Compute the statistics once, on `train`, "
    "and apply them to all three splits.",
    "validation": "the statistics came from the validation split. Only the training split may shape the model: "
    "compute the mean and spread on `train` and apply them to all three.",
    "test": "the statistics came from the test split: the test images then shape the model that they are meant to "
    "judge. Compute the mean and spread on `train` and apply them to all three.",
    "variance": "each feature was divided by its variance. Divide by the standard deviation (its square root), so "
    "that the spread becomes 1 whatever the feature's units.",
    "per image": "each image (a row) was standardised over its own features. Standardise each feature (a column) "
    "over the training images: statistics along axis 0, one mean and one spread per feature.",
    "whole array": "one mean and one spread were taken over the whole training array. Each feature gets its own "
    "(axis=0): features on very different scales are the reason to standardise.",
    "not scaled": "the features were centred but not divided by their spread: divide by each feature's training "
    "standard deviation too.",
    "not centred": "the features were divided by their spread but not centred: subtract each feature's training "
    "mean first.",
    "train only": "the training split is right, but validation and test came back unchanged: apply the same "
    "training mean and spread to them too, or the layer sees them on another scale.",
}


def _results(candidate, splits) -> tuple[np.ndarray, ...]:
    result = candidate(*splits)
    shapes = ", ".join(f"{name} {list(split.shape)}" for name, split in zip(_SPLIT_NAMES, splits, strict=True))
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise GradingFailure(
            f"standardize should return the three standardised splits (train, validation, test), got "
            f"{describe(result)} (for {shapes})."
        )
    out = []
    for name, split, got in zip(_SPLIT_NAMES, splits, result, strict=True):
        array = as_array(got, f"the standardised {name} split").astype(np.float64)
        if array.shape != split.shape:
            raise GradingFailure(
                f"the standardised {name} split has shape {list(array.shape)}; it keeps the shape of its input, "
                f"{list(split.shape)} (every image, every feature, constant ones included)."
            )
        out.append(array)
    return tuple(out)


def _matches(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...], columns: np.ndarray) -> bool:
    return all(
        np.allclose(g[:, columns], e[:, columns], rtol=1e-3, atol=1e-3) for g, e in zip(got, expected, strict=True)
    )


def _grade_standardize(candidate, rng: np.random.Generator) -> None:
    cases = []
    for _ in range(3):
        sizes = (int(rng.integers(30, 80)), int(rng.integers(8, 25)), int(rng.integers(8, 25)))
        features = int(rng.integers(3, 12))
        cases.append(
            (_splits(rng, sizes, features), f"{sizes[0]}, {sizes[1]} and {sizes[2]} images of {features} features")
        )
    # last, so that a leak is named before a missing guard against a spread of 0
    cases.append((_hard_case(rng), "40, 15 and 11 images of 7 features, feature 5 constant on the training images"))
    for splits, where in cases:
        got = _results(candidate, splits)
        train = splits[0]
        constant = np.flatnonzero(train.std(axis=0) == 0)
        varying = np.flatnonzero(train.std(axis=0) > 0)
        for name, array in zip(_SPLIT_NAMES, got, strict=True):
            bad = ~np.isfinite(array)
            if bad.any():
                column = int(np.flatnonzero(bad.any(axis=0))[0])
                if column in constant:
                    raise GradingFailure(
                        f"the standardised {name} split holds nan or inf in feature {column}, whose training values "
                        f"are all {train[0, column]:g} (spread 0), in {where}: x / 0 is inf and 0 / 0 is nan. A "
                        f"feature with no spread on the training images has nothing to scale: divide it by 1 instead "
                        f"of 0 (np.where), or keep the spread away from 0 (a small epsilon)."
                    )
                raise GradingFailure(f"the standardised {name} split holds nan or inf (feature {column}, {where}).")
        if constant.size and not np.allclose(got[0][:, constant], 0.0, atol=1e-6):
            raise GradingFailure(
                f"feature {int(constant[0])} is {train[0, constant[0]]:g} on every training image ({where}); once "
                f"centred it is 0 on them, but yours gives {describe(got[0][:, constant[0]])}. Subtract the "
                f"training mean, and divide a feature with no spread by 1."
            )
        dead = [c for c in constant if not np.any(np.concatenate(splits)[:, c])]
        if dead and not all(np.allclose(g[:, dead], 0.0, atol=1e-6) for g in got):
            raise GradingFailure(
                f"feature {dead[0]} is 0 on every image of every split ({where}), yet it is not 0 once standardised: "
                f"subtract the training mean, which is 0 for it."
            )
        ddof_1 = tuple(
            (split - train.mean(axis=0)) / _safe(train.std(axis=0, ddof=1)) for split in splits
        )  # the sample standard deviation is fine too
        if _matches(got, standardize(*splits), varying) or _matches(got, ddof_1, varying):
            continue
        for mistake, variant in _standardize_variants(*splits).items():
            if _matches(got, variant, varying):
                raise GradingFailure(f"In {where}, {_STANDARDIZE_MESSAGES[mistake]}")
        raise GradingFailure(
            f"the standardised splits differ from the right ones in {where}. The grader cannot tell which step is "
            f"off. For each feature (a column): its mean and standard deviation over the TRAINING images; then "
            f"(x - mean) / spread for the images of all three splits, with those same numbers."
        )


register(
    Exercise(
        name="standardize",
        lesson="09_many_classes",
        signature="(train [N, D], validation [M, D], test [K, D]) -> (train, validation, test), standardised",
        reference=standardize,
        grade=_grade_standardize,
    )
)


# ---------------------------------------------------------------------------------------------
# choose_on_validation (09_many_classes): the experiment that picks a setting


def choose_on_validation(candidates, train, score):
    """Train one model per candidate setting; return the one with the best validation score.

    ``candidates`` run from the simplest (or cheapest) to the most complex; on a tie the earlier one is
    kept. ``train(candidate)`` returns a model; ``score(model, split)`` its accuracy on "validation" (or
    "train", "test"). The test split is never scored here. Returns (candidate, model, validation score).
    Taught in notebooks/09_many_classes.ipynb.
    """
    best = None
    for candidate in candidates:
        model = train(candidate)
        validation_score = score(model, "validation")
        if best is None or validation_score > best[2]:  # strictly better: a tie keeps the simpler, earlier one
            best = (candidate, model, validation_score)
    return best


class _Model:
    """What the grader's ``train`` returns: which candidate trained it (the learner's code need not look)."""

    def __init__(self, index: int, candidate):
        self.index, self.candidate = index, candidate

    def __repr__(self) -> str:
        return f"<model trained with {self.candidate!r}>"


class _Experiment:
    """Seven candidates whose scores put every classic mistake on its own candidate, whatever the seed.

    Positions 1 .. 5 (shuffled by the seed) hold: the right choice, the later candidate tied with it on
    validation, the best on test, the best on train, the worst on validation. Position 0 is the first
    candidate and position 6 the last.
    """

    ROLES = ("right", "tie", "test", "train", "worst")

    def __init__(self, rng: np.random.Generator):
        self.candidates = [float(c) for c in np.sort(rng.choice(np.geomspace(1e-6, 0.3, 61), 7, replace=False))[::-1]]
        middle = rng.permutation(np.arange(1, 6))
        first, second = sorted(middle[:2])
        self.at = dict(zip(self.ROLES, (int(first), int(second), *map(int, middle[2:])), strict=True))
        images = 50  # scores are shares of 50 images, so ties are natural
        top = int(rng.integers(38, 44))
        validation = rng.choice(np.arange(20, top - 1), 7, replace=False)
        validation[[self.at["right"], self.at["tie"]]] = top
        validation[self.at["test"]] = top - 1  # the best on test is second on validation
        validation[self.at["worst"]] = validation.min() - 1 - int(rng.integers(0, 3))
        test = rng.choice(np.arange(20, 42), 7, replace=False)
        test[self.at["test"]] = 44 + int(rng.integers(0, 4))
        test[[self.at["right"], self.at["tie"]]] = 18, 19  # so that validation + test lands on the best on test
        train = rng.choice(np.arange(30, 46), 7, replace=False)
        train[self.at["train"]] = 47 + int(rng.integers(0, 3))
        self.scores = {"train": train / images, "validation": validation / images, "test": test / images}
        self.trained: list[int] = []
        self.scored: list[tuple[int, str]] = []

    def train(self, candidate):
        matches = [i for i, c in enumerate(self.candidates) if c == candidate]
        if not matches:
            raise GradingFailure(
                f"train was called with {describe(candidate)}, which is not one of the candidates {self.candidates}: "
                f"call train(candidate) with each candidate as it is."
            )
        self.trained.append(matches[0])
        return _Model(matches[0], candidate)

    def score(self, model, split):
        if not isinstance(model, _Model):
            raise GradingFailure(
                f"score was called with {describe(model)}: give it a model that train(candidate) returned."
            )
        if split not in self.scores:
            raise GradingFailure(f"score(model, split) takes split = 'train', 'validation' or 'test', not {split!r}.")
        self.scored.append((model.index, split))
        return float(self.scores[split][model.index])

    def describe(self) -> str:
        rows = ", ".join(
            f"{c:g} ({self.scores['validation'][i]:.2f} / {self.scores['test'][i]:.2f})"
            for i, c in enumerate(self.candidates)
        )
        return f"candidates (validation / test score): {rows}"


_CHOICE_MESSAGES = {
    "test": "it chose the candidate with the best TEST score. Choosing on test makes the test split part of the "
    "training: its score then flatters the model. Choose on the validation score; look at test once, afterwards.",
    "train": "it chose the candidate with the best TRAINING score: the most complex setting always wins there "
    "(it fits its own images best). Choose on the validation score.",
    "worst": "it chose the candidate with the LOWEST validation score: keep the highest (a score, not a loss).",
    "tie": "two candidates share the best validation score, and it kept the later, more complex one. A tie is no "
    "evidence for the complex one: keep the earlier (update the best only on a strictly higher score, >).",
    "first": "it returned the first candidate: compare every candidate's validation score and keep the best.",
    "last": "it returned the last candidate: it kept the last one trained instead of the best so far (is the "
    "comparison inside the loop, and does it update the best only when the score is higher?).",
}


def _grade_choose_on_validation(candidate, rng: np.random.Generator) -> None:
    experiment = _Experiment(rng)
    result = candidate(list(experiment.candidates), experiment.train, experiment.score)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise GradingFailure(
            f"choose_on_validation should return three things, (candidate, model, validation score); got "
            f"{describe(result)}."
        )
    chosen, model, value = result
    value = as_float(value, "the score it returned (third of the three)")
    at = experiment.at
    where = experiment.describe()
    index = next((i for i, c in enumerate(experiment.candidates) if c == chosen), None)
    if index is None:
        raise GradingFailure(
            f"the candidate it returned, {describe(chosen)}, is not one of the candidates ({where}): return the "
            f"chosen candidate itself, then its model, then its validation score."
        )
    if index != at["right"]:
        positions = {**{role: at[role] for role in ("test", "train", "worst", "tie")}, "first": 0, "last": 6}
        mistake = next((role for role, position in positions.items() if position == index), None)
        if mistake is not None:
            raise GradingFailure(f"With {where}, {_CHOICE_MESSAGES[mistake]}")
        raise GradingFailure(
            f"it chose {chosen:g}, not the candidate with the best validation score ({where}); the grader cannot "
            f"tell why. Train each candidate, score it on 'validation', keep the highest (the earlier on a tie)."
        )
    if not isinstance(model, _Model) or model.index != index:
        raise GradingFailure(
            f"it chose the right candidate but returned {describe(model)} as its model: return the model that "
            f"train(candidate) gave for the chosen candidate."
        )
    scores = experiment.scores
    if not np.isclose(value, scores["validation"][index]):
        for split in ("test", "train"):
            if np.isclose(value, scores[split][index]):
                raise GradingFailure(
                    f"it chose the right candidate but returned its {split.upper()} score, {value:.2f}, instead of its "
                    f"validation score, {scores['validation'][index]:.2f}: the score that chose it is the one to return"
                    + (" (and test is not to be scored inside the choice)." if split == "test" else ".")
                )
        raise GradingFailure(
            f"it chose the right candidate but returned the score {value:.4g}; its validation score is "
            f"{scores['validation'][index]:.2f}."
        )
    if any(split == "test" for _, split in experiment.scored):
        raise GradingFailure(
            "it chose right, but scored models on the test split along the way. A choice that looks at test, even "
            "only to print it, tempts the next change; keep test out of the loop and score the chosen model on it "
            "once, after the choice."
        )
    if sorted(set(experiment.trained)) != list(range(7)):
        raise GradingFailure("it chose right, but did not train every candidate (the grader cannot tell how it knew).")
    # a single candidate: nothing to compare, and it must still come back whole
    single = _Experiment(rng)
    one = [single.candidates[at["right"]]]
    result = candidate(one, single.train, single.score)
    if not isinstance(result, (tuple, list)) or len(result) != 3 or result[0] != one[0]:
        raise GradingFailure(
            f"with a single candidate, {one}, it returned {describe(result)}: return that candidate, its model and "
            f"its validation score."
        )


register(
    Exercise(
        name="choose_on_validation",
        lesson="09_many_classes",
        signature="(candidates, train(candidate) -> model, score(model, split) -> float) -> (candidate, model, float)",
        reference=choose_on_validation,
        grade=_grade_choose_on_validation,
    )
)
