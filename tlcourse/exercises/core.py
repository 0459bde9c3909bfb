"""The machinery of graded exercises: a registry of exercises, the grader runner, and ``fill_stubs``.

A graded cell in a lesson defines a stub and closes with one line::

    softmax_cross_entropy = tlc.exercises.check("softmax_cross_entropy", softmax_cross_entropy)

``check`` grades the learner's function on fresh random inputs against a reference solution kept
in the package, prints a teaching message, never raises (unless ``TLCOURSE_EXPECT_PASS=1``), and
returns the function the lesson goes on with: the learner's when it passed, the reference otherwise.

To add an exercise, a topic module calls ``register(Exercise(...))``. Its ``grade`` is a function
``grade(candidate)`` or ``grade(candidate, rng)`` (``rng`` a seeded ``numpy.random.Generator``;
the legacy ``numpy.random`` and ``random`` are seeded too) that raises ``GradingFailure("teaching
message")`` on a wrong answer. The candidate it receives calls the learner's function on copies of
array arguments: an exception inside the learner's code, a ``None`` returned, or an array argument
changed in place is reported by the runner with the input that caused it.

This module needs numpy only: graders that need TensorFlow import it inside their body.
Taught in every lesson with a graded cell (first in ``notebooks/01_prepare_dataset.ipynb``).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import os
import random
import re
import textwrap
import traceback
import warnings
from collections.abc import Callable

import numpy as np

EXPECT_PASS_VARIABLE = "TLCOURSE_EXPECT_PASS"


class GradingFailure(Exception):
    """Raised by a grader when the learner's function gives a wrong answer; the message teaches."""


class LearnerError(Exception):
    """The learner's function raised an exception (kept apart from the grader's own failures)."""

    def __init__(self, name: str, error: BaseException, inputs: str, where: str):
        self.error, self.inputs, self.where = error, inputs, where
        super().__init__(
            f"{name} raised {type(error).__name__}: {error}"
            + (f"\n  {where}" if where else "")
            + f"\n  on input {inputs}"
        )


class ReturnedNone(Exception):
    """The learner's function returned None: a stub, or a missing ``return``."""


class NotWritten(Exception):
    """The learner's function is a stub (its body is ``...``, or it raised NotImplementedError)."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One graded exercise.

    name: the function's name in the lesson (``reference.__name__`` must equal it).
    lesson: the notebook that teaches it, e.g. ``"03_retrain"``.
    signature: the call, e.g. ``"(logits, labels) -> (loss: float, grad [N, C])"``.
    reference: the course's solution: a module-level function, self-contained (imports inside its
        body), since ``fill_stubs`` pastes its source into a notebook.
    grade: ``grade(candidate)`` or ``grade(candidate, rng)``; raises ``GradingFailure`` when wrong.
    may_return_none: set it for an exercise whose function legitimately returns None.
    """

    name: str
    lesson: str
    signature: str
    reference: Callable
    grade: Callable
    may_return_none: bool = False


REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (names are unique; the reference must be named like the exercise)."""
    if not re.fullmatch(r"[A-Za-z_]\w*", exercise.name):
        raise ValueError(f"exercise name {exercise.name!r} is not a Python identifier")
    if exercise.name in REGISTRY and REGISTRY[exercise.name] is not exercise:
        raise ValueError(f"an exercise named {exercise.name!r} is already registered")
    if getattr(exercise.reference, "__name__", None) != exercise.name:
        raise ValueError(f"the reference of {exercise.name!r} must be a function named {exercise.name!r}")
    REGISTRY[exercise.name] = exercise
    return exercise


def names() -> list[str]:
    """The registered exercise names, in lesson order."""
    order = list(REGISTRY)
    return sorted(order, key=lambda name: (REGISTRY[name].lesson, order.index(name)))


def get(name: str) -> Exercise:
    if name not in REGISTRY:
        raise KeyError(f"no exercise named {name!r}; the exercises are: {', '.join(names())}")
    return REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# Describing values in messages


def describe(value, limit: int = 8) -> str:
    """A short description of an input or output for a message: shape, dtype, range, first values."""
    if isinstance(value, np.ndarray):
        text = f"{value.dtype} array of shape {list(value.shape)}"
        if value.size and np.issubdtype(value.dtype, np.number):
            finite = value[np.isfinite(value)] if np.issubdtype(value.dtype, np.floating) else value
            if finite.size:
                text += f", values from {_short(finite.min())} to {_short(finite.max())}"
            if value.size <= limit:
                text += f": {np.array2string(value, precision=4, separator=', ')}"
        return text
    if isinstance(value, (list, tuple)) and len(value) > limit:
        return f"{type(value).__name__} of {len(value)} items, starting {value[:3]!r}"
    if isinstance(value, np.random.Generator):
        return "a numpy random Generator"
    if callable(value) and hasattr(value, "__name__"):
        return f"function {value.__name__}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _short(number) -> str:
    number = float(number)
    return f"{number:.4g}"


def _describe_call(function: Callable, args: tuple, kwargs: dict) -> str:
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        parameters = []
    parts = []
    for index, value in enumerate(args):
        label = parameters[index] if index < len(parameters) else f"argument {index + 1}"
        parts.append(f"{label} = {describe(value)}")
    parts += [f"{key} = {describe(value)}" for key, value in kwargs.items()]
    return "; ".join(parts) if parts else "(no arguments)"


def _where(function: Callable, error: BaseException) -> str:
    """The line of the learner's code where the exception was raised (its last frame in their file)."""
    code = getattr(function, "__code__", None)
    frames = traceback.extract_tb(error.__traceback__)
    mine = [frame for frame in frames if code is not None and frame.filename == code.co_filename]
    frame = mine[-1] if mine else (frames[-1] if frames else None)
    if frame is None or not mine:
        return ""
    line = (frame.line or "").strip()
    return f"at line {frame.lineno - code.co_firstlineno + 1} of {function.__name__}: {line}"


# ---------------------------------------------------------------------------------------------
# The candidate a grader calls


class Candidate:
    """Calls the learner's function on copies of its array arguments and reports what went wrong."""

    def __init__(self, function: Callable, name: str, may_return_none: bool = False):
        self.function, self.name, self.may_return_none = function, name, may_return_none
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        saved = [copy.deepcopy(a) if isinstance(a, np.ndarray) else None for a in args]
        given = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        try:
            result = self.function(*given, **kwargs)
        except NotImplementedError as error:
            raise NotWritten(str(error)) from None
        except Exception as error:  # the learner's code may raise anything: report it with its input
            raise LearnerError(
                self.name, error, _describe_call(self.function, args, kwargs), _where(self.function, error)
            ) from error
        for index, (before, after) in enumerate(zip(saved, given, strict=True)):
            if before is not None and not _same_array(before, after):
                try:
                    parameter = list(inspect.signature(self.function).parameters)[index]
                except (TypeError, ValueError, IndexError):
                    parameter = f"argument {index + 1}"
                raise GradingFailure(
                    f"{self.name} changed its input `{parameter}` in place (an operation such as "
                    f"`{parameter} -= ...` or `{parameter}[...] = ...` writes into the caller's array): "
                    f"work on a copy or build a new array, so the caller's data stays as it was."
                )
        if result is None and not self.may_return_none:
            raise ReturnedNone(_describe_call(self.function, args, kwargs))
        return result


def _same_array(before: np.ndarray, after: np.ndarray) -> bool:
    if before.shape != after.shape or before.dtype != after.dtype:
        return False
    return bool(np.array_equal(before, after, equal_nan=np.issubdtype(before.dtype, np.inexact)))


def is_stub(function: Callable) -> bool:
    """True when the function's body (after its docstring) is only ``...``, ``pass``, ``raise NotImplementedError``."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = list(tree.body[0].body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body = body[1:]
    for statement in body:
        if isinstance(statement, ast.Pass):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            if statement.value.value is Ellipsis:
                continue
        if isinstance(statement, ast.Raise) and statement.exc is not None:
            exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                continue
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Grading


@dataclasses.dataclass
class Outcome:
    """What grading found. ``status`` is "passed", "failed", "not_written" or "error" (the learner's code raised)."""

    name: str
    status: str
    message: str
    seed: int

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def grade(name: str, function, seed: int | None = None) -> Outcome:
    """Grade ``function`` for exercise ``name`` without printing: an ``Outcome`` with the teaching message."""
    exercise = get(name)
    seed = new_seed() if seed is None else int(seed)
    if not callable(function):
        return Outcome(name, "failed", f"expected a function named {name}, got {describe(function)}.", seed)
    if function is exercise.reference:
        return Outcome(name, "passed", f"this {name} is the course's reference solution itself.", seed)
    if is_stub(function):
        return Outcome(name, "not_written", f"{name}'s body is still `...`.", seed)
    candidate = Candidate(function, name, exercise.may_return_none)
    rng = np.random.default_rng(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():  # the message explains overflows; no noise
            warnings.simplefilter("ignore", RuntimeWarning)
            _run_grader(exercise.grade, candidate, rng)
    except NotWritten as error:
        detail = f" ({error})" if str(error) else ""
        return Outcome(name, "not_written", f"{name} raised NotImplementedError{detail}.", seed)
    except ReturnedNone as error:
        return Outcome(
            name,
            "not_written",
            f"{name} returned None on input {error}: a `return` is missing, or the body is not written.",
            seed,
        )
    except LearnerError as error:
        return Outcome(name, "error", str(error), seed)
    except GradingFailure as error:
        return Outcome(name, "failed", str(error), seed)
    except Exception as error:  # the grader could not use what the learner's function returned
        return Outcome(
            name,
            "failed",
            f"the grader could not use what {name} returned ({type(error).__name__}: {error}). "
            f"Check the type and shape it returns: {name}{exercise.signature}.",
            seed,
        )
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    if candidate.calls == 0:
        return Outcome(name, "failed", f"the grader of {name} never called it (a grader bug).", seed)
    return Outcome(name, "passed", f"{name} gives the right answers on fresh random inputs.", seed)


def _run_grader(grader: Callable, candidate: Candidate, rng: np.random.Generator) -> None:
    if _takes_two_arguments(grader):
        grader(candidate, rng)
    else:
        grader(candidate)


def _takes_two_arguments(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def report(outcome: Outcome, in_lesson: bool = True) -> str:
    """The text ``check`` prints for an outcome."""
    name, seed = outcome.name, outcome.seed
    reproduce = f'tlc.exercises.check("{name}", {name}, seed={seed})'
    if outcome.passed:
        text = f"Passed: {outcome.message}"
        return text + (" The lesson goes on with your function." if in_lesson else "")
    if outcome.status == "not_written":
        text = f"Not written yet: {outcome.message}"
        if in_lesson:
            text += (
                " The lesson goes on with the course's reference solution; write the body and run this cell "
                "again whenever you like."
            )
        return text
    head = "Not yet: your function raised an exception." if outcome.status == "error" else "Not yet:"
    text = f"{head} {outcome.message}\n(Random inputs from seed {seed}: {reproduce} grades the same inputs again.)"
    if in_lesson:
        text += "\nThe lesson goes on with the course's reference solution; fix your function and run this cell again."
    return text


def check(name: str, function, seed: int | None = None) -> Callable:
    """Grade the learner's ``function`` for exercise ``name`` and return the function the lesson goes on with.

    Prints "Passed ..." (and returns ``function``) or a teaching message (and returns the course's
    reference). Never raises, except with ``TLCOURSE_EXPECT_PASS=1`` in the environment, where
    anything but a pass raises AssertionError (CI's run of the lessons with the stubs filled in).
    ``seed`` repeats the random inputs of an earlier run (failure messages print it).
    Used in every lesson with a graded cell (first in ``notebooks/01_prepare_dataset.ipynb``).
    """
    exercise = get(name)  # an unknown name is the lesson author's mistake: say so loudly
    outcome = grade(name, function, seed)
    print(report(outcome))
    if not outcome.passed and os.environ.get(EXPECT_PASS_VARIABLE, "") not in ("", "0"):
        raise AssertionError(f"{EXPECT_PASS_VARIABLE} is set and {name} did not pass:\n{report(outcome, False)}")
    return function if outcome.passed else exercise.reference


# ---------------------------------------------------------------------------------------------
# Filling the stubs of a notebook with the references (CI's run of the pass path)

CHECK_LINE = re.compile(r"^(\w+)\s*=\s*tlc\.exercises\.check\(\s*[\"'](\w+)[\"']\s*,\s*(\w+)\s*\)\s*$")
ANY_CHECK = re.compile(r"\btlc\.exercises\.check\(\s*[\"'](\w+)[\"']")


def reference_source(name: str) -> str:
    """The reference's source, dedented: what ``fill_stubs`` pastes in place of the stub."""
    return textwrap.dedent(inspect.getsource(get(name).reference))


def fill_stubs(notebook: dict) -> dict:
    """A copy of ``notebook`` (nbformat v4 JSON) with every graded cell's stub replaced by the reference.

    In each code cell, everything before a line ``NAME = tlc.exercises.check("NAME", NAME)`` (since
    the previous such line) becomes the reference's source. A check call naming an unknown exercise
    raises ValueError. Used by CI to run each lesson along the path a correct answer takes.
    """
    filled = copy.deepcopy(notebook)
    for index, cell in enumerate(filled.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        for match in ANY_CHECK.finditer(text):
            if match.group(1) not in REGISTRY:
                raise ValueError(
                    f"cell {index} checks an unknown exercise {match.group(1)!r}; "
                    f"the exercises are: {', '.join(names())}"
                )
        lines = text.splitlines(keepends=True)
        out, segment_start = [], 0
        for number, line in enumerate(lines):
            match = CHECK_LINE.match(line.rstrip("\r\n"))
            if match and match.group(1) == match.group(2) == match.group(3):
                out += [reference_source(match.group(2)).rstrip("\n") + "\n\n\n", line]  # the stub is dropped
                segment_start = number + 1
        if not segment_start:
            continue
        new_text = "".join(out) + "".join(lines[segment_start:])  # what follows the last check line stays
        cell["source"] = new_text.splitlines(keepends=True) if isinstance(source, list) else new_text
    return filled


# ---------------------------------------------------------------------------------------------
# Small helpers for graders


def as_float(value, what: str) -> float:
    """``value`` as a Python float, or a GradingFailure saying what was expected."""
    if isinstance(value, (np.ndarray, list, tuple)) and np.size(value) != 1:
        raise GradingFailure(f"{what} should be a single number, got {describe(value)}.")
    try:
        return float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise GradingFailure(f"{what} should be a number, got {describe(value)}.") from None


def as_array(value, what: str, shape: tuple | None = None) -> np.ndarray:
    """``value`` as a numeric numpy array (of ``shape`` when given), or a GradingFailure."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise GradingFailure(f"{what} should be an array, got {describe(value)}.") from None
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise GradingFailure(f"{what} should hold numbers, got {describe(value)}.")
    if shape is not None and array.shape != tuple(shape):
        raise GradingFailure(f"{what} should have shape {list(shape)}, got {list(array.shape)}.")
    return array
