"""Exercises of deployment and scale: the representative dataset that calibrates an int8 model (11), and the
shard of an image from its content (12)."""

from __future__ import annotations

import numpy as np

from tlcourse.exercises.core import Exercise, GradingFailure, register


def representative_dataset(images, labels, num_samples):
    """Calibration data for int8 conversion: a function that the TFLite converter calls to get inputs.

    images: uint8 array [N, size, size, 3], already resized to the model's input.
    labels: the label of each image (N ints or strings); the images may be sorted by label.
    num_samples: how many images to use at most.

    Return a function without arguments (the converter calls it, maybe more than once); each call
    yields min(num_samples, N) items, each a list holding one float32 array [1, size, size, 3] of
    raw 0-255 pixels (the float model's input: the model scales pixels itself). Take the labels in
    turn (one image of each label, then a second of each, ...), so that every label is calibrated.
    Taught in notebooks/13_deploy_to_phone.ipynb.
    """
    import numpy as np

    images = np.asarray(images)
    by_label = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    chosen = []
    rank = 0
    while len(chosen) < min(num_samples, len(images)):
        for indices in by_label.values():
            if rank < len(indices) and len(chosen) < num_samples:
                chosen.append(indices[rank])
        rank += 1

    def generate():
        for index in chosen:
            yield [images[index][None].astype(np.float32)]

    return generate


CASES = 6  # folders of sorted images each answer is graded on


def _case(rng: np.random.Generator, num_labels: int, per_label: list[int], size: int):
    """Images sorted by label (as a folder scan gives them), each distinct; their labels."""
    labels = [label for label in range(num_labels) for _ in range(per_label[label])]
    images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256  # distinct even when two draws collide
    return images, labels


def _items(candidate, images, labels, num_samples, call: str) -> list:
    generate = candidate(images, labels, num_samples)
    if not callable(generate):
        kind = type(generate).__name__
        raise GradingFailure(
            f"{call} returned a {kind}, not a function. The converter wants a function it can call (maybe more "
            "than once) to get a fresh generator: define `def generate(): ... yield ...` inside and `return generate`."
        )
    first = generate()
    try:
        items = list(first)
    except TypeError:
        raise GradingFailure(
            f"calling the function returned by {call} gave a {type(first).__name__}, which cannot be iterated: "
            "the inner function must `yield` its items (a generator function)."
        ) from None
    again = list(generate())
    if len(again) != len(items):
        raise GradingFailure(
            f"the first call of the returned function gave {len(items)} items, the second {len(again)}: each call "
            "must start over. Build the generator inside the function, not once outside it (a generator is "
            "used up after one pass, and the converter may pass over the data twice)."
        )
    return items


def _check_item(item, images, size: int) -> int:
    """The index of the image an item holds; raises with a teaching message when the item is malformed."""
    if isinstance(item, np.ndarray):
        raise GradingFailure(
            f"an item was a bare array of shape {list(item.shape)}: yield a list holding it, `[array]`. The "
            "converter takes one array per model input, in a list (this model has one input)."
        )
    if not isinstance(item, (list, tuple)) or len(item) != 1:
        raise GradingFailure(
            f"an item was {type(item).__name__} of length {len(item) if hasattr(item, '__len__') else '?'}"
            ": yield a list holding exactly one array, `[array]` (the model has one input)."
        )
    array = np.asarray(item[0])
    if array.shape == (size, size, 3):
        raise GradingFailure(
            f"an array had shape {list(array.shape)}, without the batch dimension: the model's input is "
            f"[1, {size}, {size}, 3]. Add it with `image[None]` (or np.expand_dims(image, 0))."
        )
    if array.shape != (1, size, size, 3):
        raise GradingFailure(f"an array had shape {list(array.shape)}; each must be [1, {size}, {size}, 3].")
    if array.dtype != np.float32:
        raise GradingFailure(
            f"an array had dtype {array.dtype}: the converter feeds the float model, whose input is float32 "
            "(it quantizes to uint8 afterwards). Convert with `.astype(np.float32)`."
        )
    if array.max() <= 1.0 + 1e-6 or array.min() < 0:
        raise GradingFailure(
            f"the values ran from {array.min():.3g} to {array.max():.3g}: keep the raw 0-255 pixels. The model "
            "scales them itself ((x - 127) / 128); scaled inputs calibrate the wrong ranges and the int8 model "
            "would clip every real photo."
        )
    matches = np.flatnonzero((images.astype(np.float32) == array[0]).all(axis=(1, 2, 3)))
    if len(matches) == 0:
        raise GradingFailure("an array was not one of the images (changed pixels?): yield the images as they are.")
    return int(matches[0])


def _grade_balance(candidate, rng: np.random.Generator, size: int) -> None:
    num_labels = int(rng.integers(3, 6))
    per_label = [int(n) for n in rng.integers(4, 9, num_labels)]
    images, labels = _case(rng, num_labels, per_label, size)
    num_samples = int(rng.integers(num_labels + 1, 2 * num_labels))  # fewer than the images, more than the labels
    call = f"representative_dataset(images of {len(images)} sorted by label, labels, num_samples={num_samples})"
    items = _items(candidate, images, labels, num_samples, call)
    if len(items) != num_samples:
        raise GradingFailure(
            f"{call} yielded {len(items)} items, not num_samples={num_samples}: yield exactly "
            "min(num_samples, len(images)) calibration images."
        )
    chosen = [_check_item(item, images, size) for item in items]
    if len(set(chosen)) != len(chosen):
        raise GradingFailure(
            f"{call} yielded the same image more than once while others were unused: every item should be a "
            "different image (take the first, then the second image of each label, ...)."
        )
    counts = np.bincount([labels[i] for i in chosen], minlength=num_labels)
    if counts.min() == 0 or counts.max() - counts.min() > 1:
        why = "some labels had more images than others, and the int8 ranges would be calibrated mostly on them"
        if chosen == list(range(num_samples)):
            why = (
                f"images come sorted by label (a folder scan), so the first {num_samples} are mostly one label and "
                "the int8 ranges would be calibrated on it alone"
            )
        raise GradingFailure(
            f"{call} gave label counts {counts.tolist()} (images per label): {why}. Take the labels in turn (one "
            "image of each label, then a second of each, ...): counts should differ by at most one."
        )


def _grade(candidate, rng: np.random.Generator) -> None:
    size = int(rng.integers(3, 7))
    for _ in range(CASES):  # several folders: a sample that is balanced only by luck is not balanced on all of them
        _grade_balance(candidate, rng, size)
    # Fewer images than num_samples: all of them, once each. Labels as strings, in shuffled order.
    images, labels = _case(rng, 2, [2, 3], size)
    names = np.array(["birds", "fruit"])[labels].tolist()
    order = rng.permutation(len(names))
    images, names = images[order], [names[i] for i in order]
    items = _items(candidate, images, names, 10, "representative_dataset(5 images, string labels, num_samples=10)")
    chosen = sorted(_check_item(item, images, size) for item in items)
    if chosen != list(range(len(images))):
        raise GradingFailure(
            f"with 5 images and num_samples=10 it yielded images {chosen}: when there are fewer images than "
            "num_samples, yield each image once (string labels such as 'birds' must work too)."
        )


register(
    Exercise(
        name="representative_dataset",
        lesson="13_deploy_to_phone",
        signature="(images [N, size, size, 3] uint8, labels [N], num_samples) -> a function yielding [float32 array]",
        reference=representative_dataset,
        grade=_grade,
    )
)


# ---------------------------------------------------------------------------------------------
# shard_of (14_scaling_out): which process caches an image, from its content alone


def shard_of(content, num_shards):
    """The shard of an image from its bytes: SHA-256, the first 16 hex digits as an integer, modulo num_shards.

    Taught in notebooks/14_scaling_out.ipynb; the rule of ``tlcourse.bottlenecks.in_shard``.
    """
    import hashlib

    return int(hashlib.sha256(content).hexdigest()[:16], 16) % num_shards


def _shard_variants(content: bytes, num_shards: int) -> dict[str, int]:
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    return {
        "md5": int(hashlib.md5(content).hexdigest()[:16], 16) % num_shards,
        "sha1": int(hashlib.sha1(content).hexdigest()[:16], 16) % num_shards,
        "whole": int(digest, 16) % num_shards,
        "last": int(digest[-16:], 16) % num_shards,
        "one_based": shard_of(content, num_shards) + 1,
        "python_hash": hash(content) % num_shards,
    }


_SHARD_MESSAGES = {
    "md5": "you hashed with MD5: the course's cache processes use SHA-256 (hashlib.sha256).",
    "sha1": "you hashed with SHA-1: the course's cache processes use SHA-256 (hashlib.sha256).",
    "whole": "you took the whole digest modulo num_shards; the rule reads only its first 16 hex digits, "
    "int(digest[:16], 16), the same number the bottleneck cache keys on.",
    "last": "you read the last 16 hex digits of the digest; the rule reads the first 16, int(digest[:16], 16).",
    "one_based": "shards are numbered 0 .. num_shards - 1, like --shard_index.",
    "python_hash": "Python's hash() of bytes changes from one process to the next (PYTHONHASHSEED), so two "
    "caching processes would put one image in different shards: use hashlib.sha256, which never changes.",
}


def _grade_shard_of(candidate, rng: np.random.Generator) -> None:
    contents = [b"", b"\x00", bytes(range(256))] + [rng.bytes(int(rng.integers(1, 5000))) for _ in range(60)]
    cases = [(content, num_shards) for num_shards in (1, 2, 3, 7, 16) for content in contents]
    answers = []
    for content, num_shards in cases:
        answer = candidate(content, num_shards)
        if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer)):
            raise GradingFailure(
                f"shard_of(content, {num_shards}) returned {answer!r}: return the shard number, an int in "
                f"0 .. {num_shards - 1}."
            )
        answers.append(int(answer))
    expected = [shard_of(content, num_shards) for content, num_shards in cases]
    wrong = [i for i, (a, e) in enumerate(zip(answers, expected, strict=True)) if a != e]
    if not wrong:
        return
    again = [int(candidate(content, num_shards)) for content, num_shards in cases]
    first = wrong[0]
    content, num_shards = cases[first]
    found = f"shard_of({len(content)} bytes, {num_shards}) returned {answers[first]}; the rule gives {expected[first]}"
    if again != answers:
        raise GradingFailure(
            f"{found}, and two calls on the same bytes gave different shards: every process must compute the same "
            f"shard for an image, so use a hash of its bytes (hashlib), not Python's hash() or a random number."
        )
    variants = [_shard_variants(content, num_shards) for content, num_shards in cases]
    for mistake, message in _SHARD_MESSAGES.items():
        if all(a == v[mistake] for a, v in zip(answers, variants, strict=True)):
            raise GradingFailure(f"{found}: {message}")
    raise GradingFailure(
        f"{found}. This is not a mistake the grader knows, so it cannot say which step is off. The rule: "
        f"hashlib.sha256(content).hexdigest(), its first 16 hex digits read as an integer, modulo num_shards."
    )


register(
    Exercise(
        name="shard_of",
        lesson="14_scaling_out",
        signature="(content: bytes, num_shards: int) -> int in 0 .. num_shards - 1",
        reference=shard_of,
        grade=_grade_shard_of,
    )
)
