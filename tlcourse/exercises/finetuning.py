"""Exercise of the fine-tuning lesson (09): freeze a model so that only its top blocks and head train."""

from __future__ import annotations

import re

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, LearnerError, as_array, as_float, register


def freeze_for_fine_tuning(model, num_blocks):
    """Set ``trainable`` on every layer of ``model`` so that one training step changes only the top
    ``num_blocks`` blocks and everything after them (head convolution, new layer), and no batch norm.

    Blocks are the layers named ``blocks.{i}.…`` (the highest ``i`` is the top block). Layers before
    the lowest trained block are frozen; every ``keras.layers.BatchNormalization`` layer is frozen.
    The backbone may be nested in ``model`` as a sub-model: open it (``layer.layers``). Returns nothing.
    Taught in notebooks/10_fine_tuning.ipynb.
    """
    import re

    import keras

    def every_layer(container):
        for layer in container.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from every_layer(layer)

    layers = list(every_layer(model))
    block_of = []
    for layer in layers:
        match = re.match(r"blocks\.(\d+)\.", layer.name)
        block_of.append(int(match.group(1)) if match else None)
    top_block = max(b for b in block_of if b is not None)
    start = block_of.index(top_block + 1 - num_blocks)  # the first layer of the lowest trained block
    model.trainable = True  # also sets every nested layer; then each leaf layer is set below
    for position, layer in enumerate(layers):
        if isinstance(layer, keras.Model):
            continue  # a nested model: its own layers are set one by one
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = position >= start and not is_batch_norm


def _block(name: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _leaf_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        elif layer.weights:
            yield layer


def _grading_model(rng: np.random.Generator, nested: bool):
    """The top of an unfolded EfficientNet-Lite0 (random weights, varied batch-norm statistics) and a new layer."""
    import keras

    from tlcourse import efficientnet_lite

    start = int(rng.integers(11, 14))
    keras.utils.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    top = efficientnet_lite.build_model("efficientnet_lite0", start_block=start, fold_batch_norms=False)
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, size).astype("float32"),
                    rng.normal(0, 0.1, size).astype("float32"),
                    rng.normal(0, 0.1, size).astype("float32"),
                    rng.uniform(0.5, 2.0, size).astype("float32"),
                ]
            )
    head = keras.layers.Dense(5, activation="softmax", name="final_result")
    if nested:
        inputs = keras.Input(top.input.shape[1:], name="activations")
        model = keras.Model(inputs, head(top(inputs, training=False)), name="fine_tuned")
    else:
        model = keras.Model(top.input, head(top.output), name="fine_tuned")
    return model, start


def _grade(candidate, rng: np.random.Generator) -> None:
    import keras

    for nested in (False, True):
        model, start = _grading_model(rng, nested)
        top_block = 15
        num_blocks = int(rng.integers(1, top_block - start + 1))
        first = top_block + 1 - num_blocks
        candidate(model, num_blocks)
        before = {id(v): np.array(v.numpy()) for v in model.weights}
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy", run_eagerly=True)
        x = rng.normal(0, 1, (4, *model.input.shape[1:])).astype("float32")
        y = np.eye(5, dtype="float32")[rng.integers(0, 5, 4)]
        model.train_on_batch(x, y)
        changed = {}
        for layer in _leaf_layers(model):
            moved = [w for w in layer.weights if not np.array_equal(before[id(w)], w.numpy())]
            changed[layer.name] = (layer, moved)
        where = f"(num_blocks={num_blocks}: blocks {first} to {top_block} of a model whose blocks end at {top_block}"
        where += ", the backbone nested as a sub-model)" if nested else ")"
        head_layer, head_moved = changed["final_result"]
        if not head_moved:
            raise GradingFailure(
                f"the new layer `final_result` did not change after a training step {where}: the head must train. "
                "Did the function freeze the whole model (model.trainable = False) after setting the layers?"
            )
        if nested:
            inner = [bool(moved) for layer, moved in changed.values() if layer.name != "final_result"]
            if all(inner) or not any(inner):
                raise GradingFailure(
                    f"inside the nested backbone, {'every' if all(inner) else 'no'} layer changed {where}. Here the "
                    "backbone is a model nested inside the model, and a nested model is one entry of "
                    "`model.layers`: open it (its own `.layers`) and set its layers one by one."
                )
        too_low = [n for n, (_, moved) in changed.items() if moved and _block(n) is not None and _block(n) < first]
        if too_low:
            lowest = min(_block(n) for n in too_low)
            raise GradingFailure(
                f"layers below the top {num_blocks} blocks changed (e.g. {too_low[0]}, block {lowest}) {where}. "
                f"Only blocks {first} and above train: count from the top block, and freeze everything before "
                f"the first layer of block {first}."
            )
        batch_norms = [
            (n, moved) for n, (layer, moved) in changed.items() if isinstance(layer, keras.layers.BatchNormalization)
        ]
        touched = [(n, moved) for n, moved in batch_norms if moved]
        if touched:
            name, moved = touched[0]
            what = "moving statistics" if any("moving" in w.path for w in moved) else "scale and offset"
            raise GradingFailure(
                f"the batch norm {name} changed its {what} in one training step ({len(touched)} batch norms did) "
                f"{where}. Set trainable = False on every BatchNormalization layer, even inside the trained "
                "blocks: in Keras a frozen batch norm also runs in inference mode, so it keeps the pretrained "
                "statistics that the weights around it were trained with."
            )
        untrained = [
            n
            for n, (layer, moved) in changed.items()
            if not moved
            and not isinstance(layer, keras.layers.BatchNormalization)
            and (_block(n) is None or _block(n) >= first)
        ]
        if untrained:
            raise GradingFailure(
                f"{untrained[0]} did not change after a training step {where}, but it is in (or above) the top "
                f"{num_blocks} blocks, which must train ({len(untrained)} such layers stayed frozen)."
            )


register(
    Exercise(
        name="freeze_for_fine_tuning",
        lesson="10_fine_tuning",
        signature="(model, num_blocks) -> None (sets layer.trainable in place)",
        reference=freeze_for_fine_tuning,
        grade=_grade,
        may_return_none=True,
    )
)


# ---------------------------------------------------------------------------------------------- warmup_cosine


def warmup_cosine(step, peak, total_steps, warmup_steps):
    """The learning rate at ``step``: a linear warm-up from 0 to ``peak`` over ``warmup_steps``, then a
    cosine decay from ``peak`` to 0 over the remaining ``total_steps - warmup_steps`` steps, 0 after.

    step: an int or an int array of steps (0 is the first); 0 <= warmup_steps < total_steps.
    Returns a float for an int ``step``, a float array of ``step``'s shape for an array.
    The formula of ``tlcourse.finetune.WarmupCosine``, the schedule of the package's recipe.
    Taught in notebooks/10_fine_tuning.ipynb.
    """
    import numpy as np

    steps = np.asarray(step, dtype=float)
    rising = steps / max(warmup_steps, 1)  # warmup_steps = 0: no warm-up, this branch is never used
    progress = np.clip((steps - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    falling = 0.5 * (1.0 + np.cos(np.pi * progress))  # 1 at the end of the warm-up, 0 from total_steps on
    rate = peak * np.where(steps < warmup_steps, rising, falling)
    return rate if rate.ndim else float(rate)


def _schedule_variants(steps: np.ndarray, peak: float, total: int, warmup: int) -> dict[str, np.ndarray]:
    """The right rates and the rates of the classic mistakes, at ``steps`` (what a diagnosis compares with)."""
    steps = steps.astype(float)
    decay = total - warmup
    progress = np.clip((steps - warmup) / decay, 0.0, 1.0)
    cosine = 0.5 * (1.0 + np.cos(np.pi * progress))
    rising = steps / max(warmup, 1)
    warming = steps < warmup
    return {
        "right": peak * np.where(warming, rising, cosine),
        "plus_one": peak * np.where(warming, (steps + 1) / max(warmup, 1), cosine),
        "early": peak * np.where(warming, steps / max(warmup - 1, 1), cosine),
        "linear": peak * np.where(warming, rising, 1.0 - progress),
        "over_total": peak
        * np.where(warming, rising, 0.5 * (1.0 + np.cos(np.pi * np.clip((steps - warmup) / total, 0, 1)))),
        "over_total_from_0": peak
        * np.where(warming, rising, 0.5 * (1.0 + np.cos(np.pi * np.clip(steps / total, 0, 1)))),
        "unclamped": peak * np.where(warming, rising, 0.5 * (1.0 + np.cos(np.pi * (steps - warmup) / decay))),
    }


def _close(got: np.ndarray, want: np.ndarray, peak: float) -> bool:
    return bool(np.allclose(got, want, rtol=1e-5, atol=1e-6 * peak))


def _first_wrong(steps, got, want, peak) -> str:
    wrong = ~np.isclose(got, want, rtol=1e-5, atol=1e-6 * peak)
    index = int(np.flatnonzero(wrong)[0]) if wrong.any() else 0
    return f"at step {int(steps[index])} the rate should be {want[index]:.6g}, yours is {got[index]:.6g}"


def _diagnose(steps: np.ndarray, got: np.ndarray, peak: float, total: int, warmup: int, how: str) -> None:
    """Raise a GradingFailure naming the mistake when ``got``, the learner's rates at ``steps``, is wrong."""
    variants = _schedule_variants(steps, peak, total, warmup)
    right = variants["right"]
    where = f"(peak={peak:.6g}, total_steps={total}, warmup_steps={warmup}; {how})"
    finite = np.isfinite(got)
    if not finite.all():
        step, value = int(steps[~finite][0]), got[~finite][0]
        if warmup == 0:
            raise GradingFailure(
                f"your rate is {value} at step {step} with warmup_steps=0 {where}: a division by zero "
                "(step / warmup_steps is 0 / 0 at step 0). warmup_steps = 0 means no warm-up: the rate starts at "
                "the peak. Never divide by warmup_steps when it is 0: use the warm-up formula only where "
                "step < warmup_steps, and divide by max(warmup_steps, 1)."
            )
        raise GradingFailure(f"your rate is {value} at step {step} {where}: every rate must be a finite number.")
    if _close(got, right, peak):
        return
    if not np.isclose(peak, 1.0) and _close(got * peak, right, peak):
        raise GradingFailure(
            f"your rates run from 0 up to 1 and back, not up to the peak {where}: multiply the schedule by `peak`."
        )
    warming, decaying = steps < warmup, (steps > warmup) & (steps <= total)
    at_peak, after = steps == warmup, steps > total
    if warming.any() and not _close(got[warming], right[warming], peak):
        mask = warming
        if _close(got[mask], variants["plus_one"][mask], peak):
            raise GradingFailure(
                f"the warm-up is one step ahead {where}: at step 0 your rate is already peak / warmup_steps. Steps "
                "count from 0, and the first one must have the rate 0: peak * step / warmup_steps, not "
                "(step + 1) / warmup_steps, which is an off-by-one."
            )
        if warmup > 1 and _close(got[mask], variants["early"][mask], peak):
            raise GradingFailure(
                f"the warm-up reaches the peak at step warmup_steps - 1, one step early {where}: divide by "
                "warmup_steps, not warmup_steps - 1 (the rate is the peak exactly at step == warmup_steps)."
            )
        if steps.min() == 0 and np.isclose(got[steps == 0][0], peak, rtol=1e-3):
            raise GradingFailure(
                f"at step 0 your rate is already the peak {where}: there is no warm-up. The rate must start at 0 "
                "and rise linearly to the peak over the first warmup_steps steps (peak * step / warmup_steps), and "
                "only then decay on the cosine."
            )
        if _close(got[mask], np.zeros(mask.sum()), peak):
            raise GradingFailure(
                f"your rate stays 0 through the whole warm-up {where}: did an integer division (`//`) round "
                "step / warmup_steps down to 0? The rate rises linearly: peak * step / warmup_steps."
            )
        raise GradingFailure(
            f"the warm-up is wrong {where}: {_first_wrong(steps[mask], got[mask], right[mask], peak)}. During the "
            "first warmup_steps steps the rate rises linearly from 0 at step 0: peak * step / warmup_steps."
        )
    over_total = _close(got[~warming], variants["over_total"][~warming], peak) or _close(
        got[~warming], variants["over_total_from_0"][~warming], peak
    )
    if over_total:
        raise GradingFailure(
            f"your cosine measures its progress over total_steps {where}, so it has not reached 0 when the run "
            "ends. The decay lasts total_steps - warmup_steps steps: progress = (step - warmup_steps) / "
            "(total_steps - warmup_steps), from 0 at the end of the warm-up to 1 at total_steps."
        )
    if at_peak.any() and not _close(got[at_peak], right[at_peak], peak):
        value = got[at_peak][0]
        if np.isclose(value, 2 * peak, rtol=1e-3):
            raise GradingFailure(
                f"at step warmup_steps your rate is twice the peak {where}: 1 + cos(0) is 2, so the cosine factor "
                "must be halved: 0.5 * (1 + cos(pi * progress)) runs from 1 down to 0."
            )
        raise GradingFailure(
            f"at step == warmup_steps the rate must be exactly the peak {where}; yours is {value:.6g}. The warm-up "
            "ends there and the cosine starts there (progress = 0, so 0.5 * (1 + cos 0) = 1)."
        )
    if decaying.any() and not _close(got[decaying], right[decaying], peak):
        mask = decaying
        if (got[mask] < -1e-6 * peak).any():
            raise GradingFailure(
                f"your rate becomes negative during the decay {where} (it reaches {got[mask].min():.4g}): "
                "peak * cos(pi * progress) runs from peak to -peak. The factor must run from 1 to 0: "
                "0.5 * (1 + cos(pi * progress)); did you forget the 0.5 * (1 + ...)?"
            )
        if _close(got[mask], variants["linear"][mask], peak):
            raise GradingFailure(
                f"your rate decays linearly {where}: after the warm-up it must follow a cosine, "
                "peak * 0.5 * (1 + cos(pi * progress)), which stays near the peak longer and lands softly on 0."
            )
        ends = got[steps == total]
        if ends.size and np.isclose(ends[0], peak / 2, rtol=1e-3):
            raise GradingFailure(
                f"your cosine goes from the peak to half the peak, not to 0 {where}: at step total_steps the rate "
                "must be 0. The factor 0.5 * (1 + cos(pi * progress)) runs from 1 to 0 as progress goes from "
                "0 to 1 (half a turn: pi, not pi / 2; and 0.5 * (1 + cos), not another mix of them)."
            )
        factor = right[mask] / peak
        spread = np.sum((1 - factor) ** 2)
        floor = float(np.sum((got[mask] - peak * factor) * (1 - factor)) / spread) if spread > 0 else 0.0
        if abs(floor) > 1e-6 * peak and _close(got[mask], floor + (peak - floor) * factor, peak):
            raise GradingFailure(
                f"your rate decays to a floor of {floor:.4g} ({floor / peak:.3g} of the peak), not to 0 {where}: "
                "this schedule ends at 0 at step total_steps: peak * 0.5 * (1 + cos(pi * progress)), no minimum rate."
            )
        raise GradingFailure(
            f"the decay is wrong {where}: {_first_wrong(steps[mask], got[mask], right[mask], peak)}. After the "
            "warm-up: peak * 0.5 * (1 + cos(pi * progress)), progress = (step - warmup_steps) / "
            "(total_steps - warmup_steps)."
        )
    if after.any() and not _close(got[after], right[after], peak):
        climbs = _close(got[after], variants["unclamped"][after], peak) or (got[after] > 1e-6 * peak).any()
        raise GradingFailure(
            f"after total_steps your rate is not 0 {where}: "
            + _first_wrong(steps[after], got[after], right[after], peak)
            + (
                ". Past total_steps the cosine climbs back up (progress > 1): clamp progress to 1 (np.minimum, "
                "np.clip) so that the rate stays 0 from step total_steps on."
                if climbs
                else ". From step total_steps on the rate is 0."
            )
        )
    raise GradingFailure(f"wrong rates {where}: {_first_wrong(steps, got, right, peak)}.")


def _call_steps(candidate, steps: np.ndarray, peak: float, total: int, warmup: int, one_by_one: bool):
    """The learner's rates at ``steps``: one int step a call, or the whole array in one call."""
    if one_by_one:
        return np.array(
            [
                as_float(
                    candidate(int(s), peak, total, warmup), f"warmup_cosine({int(s)}, {peak:.6g}, {total}, {warmup})"
                )
                for s in steps
            ]
        )
    result = candidate(steps.copy(), peak, total, warmup)
    return as_array(result, f"warmup_cosine of an int array of {len(steps)} steps", shape=steps.shape).astype(float)


def _grade_case(candidate, steps: np.ndarray, peak: float, total: int, warmup: int, scalars=None) -> None:
    """Grade one setting, on every step of ``steps`` one at a time (or on ``scalars`` of them) and as an array."""
    one = steps if scalars is None else scalars
    results, errors = {}, {}
    for one_by_one, these in ((True, one), (False, steps)):
        try:
            results[one_by_one] = _call_steps(candidate, these, peak, total, warmup, one_by_one)
        except LearnerError as error:
            if warmup == 0 and isinstance(error.error, ZeroDivisionError):
                raise GradingFailure(
                    f"{type(error.error).__name__} with warmup_steps=0 (peak={peak:.6g}, total_steps={total}): "
                    f"{error.where or error.error}. warmup_steps = 0 means no warm-up: the rate starts at the "
                    "peak. Never divide by warmup_steps when it is 0: use the warm-up formula only where "
                    "step < warmup_steps, and divide by max(warmup_steps, 1)."
                ) from None
            errors[one_by_one] = error
    if True in errors and False in errors:
        raise errors[True]
    if False in errors:
        error = errors[False]
        raise GradingFailure(
            f"warmup_cosine works on one int step but raised {type(error.error).__name__} on an array of steps "
            f"({error.error}; {error.where or 'inside your function'}). `step` may be an array: `if step < ...`, "
            "min(), max() and math.cos handle one number; use np.where, np.minimum / np.clip and np.cos, "
            "which work element by element."
        )
    if True in errors:
        error = errors[True]
        raise GradingFailure(
            f"warmup_cosine works on an array of steps but raised {type(error.error).__name__} on one int step "
            f"({error.error}; {error.where or 'inside your function'}). `step` may be a plain int: start from "
            "np.asarray(step, dtype=float), and return a float for an int step."
        )
    _diagnose(one, results[True], peak, total, warmup, "one int step a call")
    _diagnose(steps, results[False], peak, total, warmup, "an array of steps in one call")


# Settings where each classic mistake must show, whatever the seed: (steps, peak, total_steps, warmup_steps).
_HARD_CASES = (
    (np.arange(0, 131), 0.3, 100, 10),  # a warm-up, the whole decay, and 30 steps past the end
    (np.arange(0, 51), 0.02, 40, 0),  # no warm-up: the rate starts at the peak (and no division by 0)
    (np.arange(0, 9), 5e-3, 4, 3),  # a one-step decay
    (np.r_[0:20, 490:510, 5000, 9990:10010, 15000, 20000], 1e-3, 10000, 500),  # the recipe's 5% warm-up
)


def _grade_warmup_cosine(candidate, rng: np.random.Generator) -> None:
    for steps, peak, total, warmup in _HARD_CASES:
        _grade_case(candidate, steps, peak, total, warmup)
    for _ in range(6):
        peak = float(10 ** rng.uniform(-5, 0))
        total = int(rng.integers(2, 3000))
        warmup = 0 if rng.random() < 0.25 else int(rng.integers(1, total))
        steps = rng.integers(0, int(1.5 * total) + 2, size=int(rng.integers(1, 300)))
        _grade_case(candidate, steps, peak, total, warmup, scalars=steps[:20])


register(
    Exercise(
        name="warmup_cosine",
        lesson="10_fine_tuning",
        signature="(step: int or int array, peak, total_steps, warmup_steps) -> float or float array",
        reference=warmup_cosine,
        grade=_grade_warmup_cosine,
    )
)
