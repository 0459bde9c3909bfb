"""The graded exercises: every reference passes, every grader can fail, and the machinery around them works."""

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tlcourse.exercises as exercises
from tests.exercise_mistakes import MISTAKES, NEEDS_TENSORFLOW
from tlcourse import data
from tlcourse.exercises import basics, core

REQUIRED = {
    "split_for": "01_prepare_dataset",
    "imagenet_probabilities": "02_cache_bottlenecks",
    "softmax_cross_entropy": "03_retrain",
    "balanced_batch": "03_retrain",
    "train_softmax_layer": "03_retrain",
    "train_keras_layer": "03_retrain",
    "top_k_accuracy": "05_label_new_images",
    "balanced_accuracy": "05_label_new_images",
    "adjust_for_prior": "05_label_new_images",
    "find_near_duplicates": "06_your_data",
    "folds_for": "07_why_features_transfer",
    "retrieval_scores": "08_embeddings",
    "standardize": "09_many_classes",
    "choose_on_validation": "09_many_classes",
    "freeze_for_fine_tuning": "10_fine_tuning",
    "warmup_cosine": "10_fine_tuning",
    "expected_calibration_error": "11_calibration",
    "fit_temperature": "11_calibration",
    "representative_dataset": "13_deploy_to_phone",
    "shard_of": "14_scaling_out",
}
NUMPY_ONLY = sorted(set(REQUIRED) - set(NEEDS_TENSORFLOW))


def test_the_registry_and_the_tests_agree():
    """Every registered exercise is required here, and has tested wrong answers (a grader that cannot fail teaches
    nothing)."""
    assert set(exercises.names()) == set(REQUIRED) == set(MISTAKES)
    for name, lesson in REQUIRED.items():
        assert exercises.REGISTRY[name].lesson == lesson
        assert exercises.REGISTRY[name].reference.__name__ == name
        assert f"notebooks/{lesson}.ipynb" in exercises.REGISTRY[name].reference.__doc__
        assert len(MISTAKES[name]) >= 5, name
    assert set(NEEDS_TENSORFLOW) < set(REQUIRED)


def _pasted_reference(name):
    """The reference as fill_stubs pastes it: its source run in an empty namespace (so no imports given)."""
    namespace = {}
    exec(compile(exercises.reference_source(name), f"<{name}>", "exec"), namespace)
    assert namespace[name] is not exercises.REGISTRY[name].reference  # graded for real, not recognised
    return namespace[name]


@pytest.mark.parametrize("name", NUMPY_ONLY)
def test_the_reference_passes_and_is_self_contained(name):
    for seed in range(20):
        outcome = exercises.grade(name, _pasted_reference(name), seed=seed)
        assert outcome.passed, (seed, outcome.message)
    assert "reference solution itself" in exercises.grade(name, exercises.REGISTRY[name].reference).message


@pytest.mark.parametrize(
    ("name", "index"), [(name, index) for name in NUMPY_ONLY for index in range(len(MISTAKES[name]))]
)
def test_a_plausible_mistake_fails_with_its_message_on_every_seed(name, index):
    """A verdict must not depend on the seed: each wrong answer fails on 20 seeds, with the message meant for it."""
    wrong, message = MISTAKES[name][index]
    for seed in range(20):
        outcome = exercises.grade(name, wrong, seed=seed)
        assert outcome.status == "failed", (wrong.__name__, seed, outcome)
        assert message in outcome.message, (wrong.__name__, seed, outcome.message)


def test_fit_temperature_grid_answers_decide_the_same_on_every_seed():
    """A fine linear grid passes and grids that stop at 1 or step by 1.0 fail, whatever the seed."""
    from tests import exercise_mistakes as m

    for seed in range(40):
        outcome = exercises.grade("fit_temperature", m.temperature_linear_grid, seed=seed)
        assert outcome.passed, (seed, outcome.message)
        for wrong in (m.temperature_coarse_grid, m.temperature_grid_from_one):
            assert exercises.grade("fit_temperature", wrong, seed=seed).status == "failed", (seed, wrong.__name__)


def test_shard_of_reference_is_the_caching_processes_rule(stamps_dir):
    from tlcourse import bottlenecks
    from tlcourse.exercises import deploy

    records = data.scan_dataset(stamps_dir).images[:40]
    for num_shards in (2, 3, 5):
        for record in records:
            shard = deploy.shard_of(record.path.read_bytes(), num_shards)
            assert bottlenecks.in_shard(record, num_shards, shard)


def test_split_for_reference_equals_the_course_rule():
    rng = np.random.default_rng(0)
    names = basics._random_names(rng, 3000) + [f"cat_{i}_nohash_{j}.jpg" for i in range(50) for j in range(3)]
    for validation, testing in ((10, 10), (20, 5), (0, 0), (33.3, 12.5), (50, 50)):
        for name in names:
            assert basics.split_for(name, validation, testing) == data.split_for(name, validation, testing), name


# ------------------------------------------------------------------------------------------- the runner


def test_a_stub_is_not_written_and_the_lesson_goes_on_with_the_reference(capsys):
    def softmax_cross_entropy(logits, labels):
        """A docstring, then nothing."""
        ...  # your code here

    used = exercises.check("softmax_cross_entropy", softmax_cross_entropy)
    assert used is exercises.REGISTRY["softmax_cross_entropy"].reference
    printed = capsys.readouterr().out
    assert "Not written yet: softmax_cross_entropy's body is still `...`." in printed
    assert printed.lower().count("not written") == 1 and "course's reference solution" in printed


def test_not_implemented_and_none_count_as_not_written():
    def raises(logits, labels):
        raise NotImplementedError("later")

    def computes_nothing(logits, labels):
        total = 0
        for _row in logits:
            total += 1

    assert exercises.grade("softmax_cross_entropy", raises).status == "not_written"
    outcome = exercises.grade("softmax_cross_entropy", computes_nothing)
    assert outcome.status == "not_written" and "`return` is missing" in outcome.message


def test_an_exception_is_reported_with_its_type_line_and_input(capsys):
    def top_k_accuracy(probabilities, labels, k):
        ranked = np.argsort(-probabilities)
        return ranked[labels]["oops"]

    used = exercises.check("top_k_accuracy", top_k_accuracy)
    assert used is exercises.REGISTRY["top_k_accuracy"].reference
    printed = capsys.readouterr().out
    assert "raised IndexError" in printed
    assert 'return ranked[labels]["oops"]' in printed  # the learner's line
    assert "probabilities = float64 array of shape [300, 10]" in printed  # which input
    assert "seed=" in printed


def test_a_passing_function_is_the_one_the_lesson_goes_on_with(capsys):
    def top_k_accuracy(probabilities, labels, k):
        top = np.argsort(-probabilities, axis=1)[:, :k]
        return float(np.mean([label in row for label, row in zip(labels, top, strict=True)]))

    assert exercises.check("top_k_accuracy", top_k_accuracy) is top_k_accuracy
    assert "Passed" in capsys.readouterr().out


def test_a_failure_prints_the_seed_that_reproduces_it(capsys):
    wrong = MISTAKES["top_k_accuracy"][0][0]
    exercises.check("top_k_accuracy", wrong, seed=1234)
    printed = capsys.readouterr().out
    assert printed.startswith("Not yet:") and "seed=1234" in printed
    assert (
        exercises.grade("top_k_accuracy", wrong, seed=1234).message
        == exercises.grade("top_k_accuracy", wrong, seed=1234).message
    )


def test_grading_leaves_global_random_state_alone():
    np.random.seed(5)
    random.seed(5)
    expected = (np.random.random(), random.random())
    np.random.seed(5)
    random.seed(5)
    assert exercises.grade("top_k_accuracy", _pasted_reference("top_k_accuracy")).passed
    assert (np.random.random(), random.random()) == expected


def test_check_never_raises_but_expect_pass_does(monkeypatch, capsys):
    wrong = MISTAKES["softmax_cross_entropy"][0][0]
    monkeypatch.delenv(core.EXPECT_PASS_VARIABLE, raising=False)
    exercises.check("softmax_cross_entropy", wrong)
    exercises.check("softmax_cross_entropy", "not a function")
    monkeypatch.setenv(core.EXPECT_PASS_VARIABLE, "1")
    with pytest.raises(AssertionError, match="subtract each row's maximum"):
        exercises.check("softmax_cross_entropy", wrong)
    reference = exercises.REGISTRY["softmax_cross_entropy"].reference
    assert exercises.check("softmax_cross_entropy", reference) is reference


def test_an_unknown_exercise_name_is_the_lesson_authors_mistake():
    with pytest.raises(KeyError, match="no exercise named"):
        exercises.check("softmax", lambda x: x)


def test_is_stub():
    def stub(a):
        """Doc."""
        ...

    def stub_pass(a):
        pass

    def stub_raise(a):
        raise NotImplementedError

    def written(a):
        """Doc."""
        return a

    assert core.is_stub(stub) and core.is_stub(stub_pass) and core.is_stub(stub_raise)
    assert not core.is_stub(written) and not core.is_stub(len)


def test_core_needs_no_tensorflow():
    code = "import sys, tlcourse.exercises; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_topic_module_exists_and_registers():
    for topic in exercises.TOPICS:
        module = sys.modules[f"tlcourse.exercises.{topic}"]
        assert any(e.reference.__module__ == module.__name__ for e in exercises.REGISTRY.values()), topic


# ------------------------------------------------------------------------------------------- fill_stubs

STUB_CELL = '''def softmax_cross_entropy(logits, labels):
    """Stub."""
    ...  # your code here


softmax_cross_entropy = tlc.exercises.check("softmax_cross_entropy", softmax_cross_entropy)
print("after the check")'''

TWO_STUBS = """def top_k_accuracy(probabilities, labels, k):
    ...


top_k_accuracy = tlc.exercises.check("top_k_accuracy", top_k_accuracy)

def split_for(relative, validation_percentage, testing_percentage):
    ...


split_for = tlc.exercises.check("split_for", split_for)
"""


CODE_FIELDS = {"outputs": [], "execution_count": None}


def _notebook(*cells):
    return {
        "cells": [
            {
                "cell_type": kind,
                "metadata": {},
                "source": source,
                **({"outputs": [], "execution_count": None} if kind == "code" else {}),
            }
            for kind, source in cells
        ],
        "metadata": {"kernelspec": {"name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_fill_stubs_replaces_each_stub_by_the_reference(monkeypatch, capsys):
    notebook = _notebook(
        ("markdown", '# Title\n\nexercises.check("nothing", here) in markdown is not code'),
        ("code", "import numpy as np\nimport tlcourse as tlc"),
        ("code", STUB_CELL.splitlines(keepends=True)),  # nbformat stores a list of lines
        ("code", TWO_STUBS),  # or one string
        ("code", 'tlc.exercises.check("softmax_cross_entropy", lambda l, y: (0.0, l))  # a demo, left alone'),
    )
    before = json.dumps(notebook)
    filled = exercises.fill_stubs(notebook)
    assert json.dumps(notebook) == before  # the input is not changed
    cell = "".join(filled["cells"][2]["source"])
    assert isinstance(filled["cells"][2]["source"], list)
    assert "..." not in cell and "shifted" in cell and cell.endswith('print("after the check")')
    assert cell.count("def softmax_cross_entropy") == 1
    two = filled["cells"][3]["source"]
    assert isinstance(two, str) and two.count("def top_k_accuracy") == 1 and two.count("def split_for") == 1
    assert "hashlib" in two and "..." not in two
    assert filled["cells"][4] == notebook["cells"][4] and filled["cells"][0] == notebook["cells"][0]
    # the filled cells run, and under TLCOURSE_EXPECT_PASS every check passes
    monkeypatch.setenv(core.EXPECT_PASS_VARIABLE, "1")
    namespace = {}
    for cell in filled["cells"][1:4]:
        exec("".join(cell["source"]), namespace)
    assert namespace["split_for"] is not None
    assert capsys.readouterr().out.count("Passed") == 3


def test_fill_stubs_refuses_an_unknown_exercise():
    notebook = _notebook(("code", 'soft = tlc.exercises.check("softmax_xent", soft)'))
    with pytest.raises(ValueError, match="unknown exercise 'softmax_xent'"):
        exercises.fill_stubs(notebook)


# ------------------------------------------------------------------------------------------- the command line

LEARNER_FILE = textwrap.dedent(
    """
    import numpy as np


    def softmax_cross_entropy(logits, labels):
        exps = np.exp(logits)
        probabilities = exps / exps.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        grad = probabilities.copy()
        grad[rows, labels] -= 1
        return -np.log(probabilities[rows, labels]).mean(), grad / len(labels)


    def stable(logits, labels):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = np.arange(len(labels))
        grad = np.exp(log_probabilities)
        grad[rows, labels] -= 1
        return -log_probabilities[rows, labels].mean(), grad / len(labels)
    """
)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tlcourse.exercises", *args], capture_output=True, text=True, timeout=120
    )


def test_command_line(tmp_path):
    learner = tmp_path / "mine.py"
    learner.write_text(LEARNER_FILE)
    listing = _cli("list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in REQUIRED)
    assert "03_retrain" in listing.stdout

    passed = _cli("check", "softmax_cross_entropy", f"{learner}:stable")
    assert passed.returncode == 0 and "Passed" in passed.stdout

    failed = _cli("check", "softmax_cross_entropy", str(learner))  # the function named like the exercise
    assert failed.returncode == 1
    assert "subtract each row's maximum before exp" in failed.stdout and "--seed" in failed.stdout

    usage = _cli("check", "no_such_exercise", f"{learner}:stable")
    assert usage.returncode == 2 and "no exercise named" in usage.stderr and "Traceback" not in usage.stderr


def test_command_line_usage_errors(tmp_path, capsys):
    from tlcourse.exercises.__main__ import main

    learner = tmp_path / "mine.py"
    learner.write_text(LEARNER_FILE)
    bad_syntax = tmp_path / "broken.py"
    bad_syntax.write_text("def softmax_cross_entropy(logits, labels:\n    return 1\n")
    raises = tmp_path / "raises.py"
    raises.write_text("import no_such_module_here\n")
    for args, message in (
        (("check", "softmax_cross_entropy", str(tmp_path / "missing.py")), "no such file"),
        (("check", "softmax_cross_entropy", f"{learner}:nothing_here"), "defines no function 'nothing_here'"),
        (("check", "softmax_cross_entropy", str(bad_syntax)), "syntax error at line 1"),
        (("check", "softmax_cross_entropy", str(raises)), "raised ModuleNotFoundError while loading"),
    ):
        assert main(list(args)) == 2, args
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check"])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------- STUBS.md

STUBS = Path(core.__file__).with_name("STUBS.md")


def _stub_cells():
    text = STUBS.read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def _run_cell(source, namespace, number):
    """Run a cell the way IPython does: its source registered in linecache, so inspect can read it."""
    import linecache

    filename = f"<cell-{number}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)


def test_the_recommended_stub_cells_run_and_fill(monkeypatch, capsys):
    import tlcourse as tlc

    cells = _stub_cells()
    names = [core.CHECK_LINE.match(cell.strip().splitlines()[-1]).group(1) for cell in cells]
    assert sorted(names) == NUMPY_ONLY  # the Keras exercises have their stubs in their lessons
    namespace = {"tlc": tlc, "np": np}
    for number, cell in enumerate(cells):
        _run_cell(cell, namespace, number)
    printed = capsys.readouterr().out
    assert printed.count("Not written yet") == len(cells) and "Passed" not in printed
    for name in names:
        assert namespace[name] is exercises.REGISTRY[name].reference
        assert exercises.REGISTRY[name].reference.__doc__.count("notebooks/") == 1

    filled = exercises.fill_stubs(_notebook(*[("code", cell) for cell in cells]))
    monkeypatch.setenv(core.EXPECT_PASS_VARIABLE, "1")
    namespace = {"tlc": tlc, "np": np}
    for number, cell in enumerate(filled["cells"]):
        _run_cell(cell["source"], namespace, 100 + number)
    assert capsys.readouterr().out.count("Passed") == len(cells)


@pytest.mark.parametrize("name", NUMPY_ONLY)
def test_a_correct_answer_written_another_way_passes(name):
    from tests.exercise_mistakes import CORRECT

    for function in CORRECT[name]:
        outcome = exercises.grade(name, function, seed=7)
        assert outcome.passed, (function.__name__, outcome.message)


def test_register_an_exercise_with_a_one_argument_grader(monkeypatch, capsys):
    monkeypatch.setattr(core, "REGISTRY", dict(core.REGISTRY))

    def double(values):
        return 2 * values

    def grade_double(candidate):  # no rng: numpy's global generator is seeded for it
        values = np.random.normal(size=5)
        if not np.allclose(candidate(values), 2 * values):
            raise core.GradingFailure("multiply by two")

    core.register(core.Exercise("double", "99_test", "(values) -> values", double, grade_double))
    assert core.grade("double", lambda values: values * 2).passed
    assert core.grade("double", lambda values: values + 2).message == "multiply by two"
    assert core.grade("double", double).passed
    with pytest.raises(ValueError, match="already registered"):
        core.register(core.Exercise("double", "99_test", "()", double, grade_double))
    with pytest.raises(ValueError, match="must be a function named 'triple'"):
        core.register(core.Exercise("triple", "99_test", "()", double, grade_double))

    def set_nothing(values):
        values.fill(0)

    def grade_set_nothing(candidate, rng):
        candidate(rng.normal(size=3))

    core.register(core.Exercise("set_nothing", "99_test", "(values) -> None", set_nothing, grade_set_nothing, True))
    outcome = core.grade("set_nothing", lambda values: values.fill(0))
    assert outcome.status == "failed" and "changed its input `values` in place" in outcome.message
    assert core.grade("set_nothing", lambda values: None).passed  # None allowed for this one


def test_command_line_fill(tmp_path, capsys):
    from tlcourse.exercises.__main__ import main

    lesson, output = tmp_path / "lesson.ipynb", tmp_path / "filled.ipynb"
    lesson.write_text(json.dumps(_notebook(("code", STUB_CELL))))
    assert main(["fill", str(lesson), str(output)]) == 0
    assert "log_probabilities" in "".join(json.loads(output.read_text())["cells"][0]["source"])
    lesson.write_text(json.dumps(_notebook(("code", 'x = tlc.exercises.check("nope", x)'))))
    assert main(["fill", str(lesson), str(output)]) == 2
    assert "unknown exercise 'nope'" in capsys.readouterr().err
