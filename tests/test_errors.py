"""One family of errors, one handler: user mistakes end in `error: ...`, never in a traceback."""

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tlcourse
from tlcourse import label
from tlcourse.book import LessonFailed
from tlcourse.capstone import CapstoneError
from tlcourse.download import DownloadError
from tlcourse.errors import ModelFileError, SettingError, TLCourseError, command_line
from tlcourse.exercises.core import GradingFailure
from tlcourse.images import ImageError
from tlcourse.search import SearchIndexError

ROOT = Path(tlcourse.__file__).resolve().parents[1]

# Exceptions of the package that are not the course's errors, on purpose, each with the reason.
GRADING = "grading's control flow: raised while a grader runs, turned into an Outcome by exercises.grade"
OUTSIDE_THE_FAMILY = {
    "tlcourse.exercises.core.GradingFailure": GRADING,  # a wrong answer: the message teaches
    "tlcourse.exercises.core.LearnerError": GRADING,  # the learner's function raised
    "tlcourse.exercises.core.ReturnedNone": GRADING,  # a missing return: "not written"
    "tlcourse.exercises.core.NotWritten": GRADING,  # a stub: "not written"
}


def package_modules() -> list:
    """Every module of the package, its subpackages and their ``__main__`` included, imported."""
    names = ["tlcourse", *(info.name for info in pkgutil.walk_packages(tlcourse.__path__, "tlcourse."))]
    return [importlib.import_module(name) for name in names]


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exceptions_of_the_package() -> dict[str, type]:
    """Every exception class the package defines (a class inside a function too, once the function has run)."""
    package_modules()
    found, todo = {}, [BaseException]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.split(".")[0] == "tlcourse" and qualified(sub) not in found:
                found[qualified(sub)] = sub
            todo.append(sub)
    return found


EXCEPTIONS = exceptions_of_the_package()
FAMILY = sorted(set(EXCEPTIONS) - set(OUTSIDE_THE_FAMILY) - {qualified(TLCourseError)})


def test_the_scan_finds_every_error_and_each_exception_outside_the_family_is_real():
    for error in (CapstoneError, LessonFailed, SearchIndexError, SettingError, ImageError, GradingFailure):
        assert EXCEPTIONS.get(qualified(error)) is error
    for name in OUTSIDE_THE_FAMILY:
        assert name in EXCEPTIONS, f"{name} is listed as outside the family but the package has no such exception"
        assert not issubclass(EXCEPTIONS[name], TLCourseError), f"{name} is in the family: take it off the list"


@pytest.mark.parametrize("name", FAMILY)
def test_the_courses_errors_are_one_family_and_keep_their_builtin_base(name):
    error = EXCEPTIONS[name]
    assert issubclass(error, TLCourseError), f"{name}: derive it from TLCourseError, or list it with a reason"
    assert issubclass(error, (ValueError, RuntimeError))  # existing `except ValueError` code keeps working


def test_the_handler_prints_one_line_for_a_user_mistake_and_lets_bugs_through(capsys):
    def failing(error):
        def main(argv=None):
            raise error

        return command_line(main)

    assert failing(DownloadError("could not download x; put the file there yourself"))() == 1
    assert capsys.readouterr().err == "error: could not download x; put the file there yourself\n"
    assert failing(FileNotFoundError("labels.txt: not found"))() == 1
    assert capsys.readouterr().err == "error: labels.txt: not found\n"
    assert failing(SettingError("{a} and {b} cannot go together"))() == 2  # the command line itself: as argparse
    assert capsys.readouterr().err == "error: a and b cannot go together\n"
    assert failing(KeyboardInterrupt())() == 130
    assert command_line(lambda argv=None: None)() == 0
    for bug in (ZeroDivisionError("division by zero"), ValueError("operands could not be broadcast")):
        with pytest.raises(type(bug)):  # a bug in the course is not the user's mistake: full traceback
            failing(bug)()


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory):
    """A truncated `.keras` file, a SavedModel folder with a truncated `saved_model.pb`, a `.pb` of noise."""
    folder = tmp_path_factory.mktemp("damaged")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(folder / "model.keras")
    whole = (folder / "model.keras").read_bytes()
    (folder / "model.keras").write_bytes(whole[: len(whole) // 2])

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.f = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(folder / "saved"), signatures=module.f)
    graph = folder / "saved" / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])

    (folder / "graph.pb").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "labels.txt").write_text("a\nb\nc\n")
    return folder


@pytest.mark.parametrize("name", ["model.keras", "saved", "graph.pb"])
def test_a_damaged_model_file_is_a_clear_error_naming_it(damaged_models, name, photo, capsys):
    path = damaged_models / name
    with pytest.raises(ModelFileError, match=str(path)):
        label.load_classifier(path)
    code = label.main([str(photo("chelsea.png")), f"--graph={path}", f"--labels={damaged_models / 'labels.txt'}"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and str(path) in err and "Traceback" not in err


def test_label_image_on_a_damaged_savedmodel_from_the_shell(damaged_models, photo):
    path = damaged_models / "saved"
    run = subprocess.run(
        [sys.executable, "-m", "tlcourse.label", str(photo("chelsea.png")), f"--graph={path}",
         f"--labels={damaged_models / 'labels.txt'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"error: {path}: this SavedModel folder cannot be read" in run.stderr


def test_a_labels_file_that_does_not_match_the_model_is_named(tmp_path, photo, capsys):
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, "softmax")]
    )
    model.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    graph, labels = tmp_path / "model.keras", tmp_path / "labels.txt"
    code = label.main([str(photo("chelsea.png")), f"--graph={graph}", f"--labels={labels}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err == (
        f"error: {graph}: the model has 3 outputs but {labels} lists 2 labels; "
        "pass the labels file retrain wrote with this model (--labels)\n"
    )


def main_called_by(path: Path) -> str | None:
    """The name of the function that ``if __name__ == "__main__":`` in ``path`` calls, or None without that block."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'"):
            called = [n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
            assert len(called) == 1, f"{path}: its __main__ block should call one function, calls {called}"
            return called[0]
    return None


def command_lines() -> dict[str, tuple[object, str]]:
    """Every command: each module of the package with a ``__main__`` block, and the scripts at the root."""
    found = {}
    for module in package_modules():
        if (name := main_called_by(Path(module.__file__))) is not None:
            found[module.__name__] = (module, name)
    for script in sorted(ROOT.glob("*.py")):
        if (name := main_called_by(script)) is not None:
            spec = importlib.util.spec_from_file_location(f"_script_{script.stem}", script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # not __main__: it only imports
            found[script.name] = (module, name)
    return found


def test_every_command_line_goes_through_the_one_handler():
    commands = command_lines()
    known = {"backbones", "book", "compare", "datasets", "demo", "label", "retrain", "search", "exercises.__main__"}
    assert {f"tlcourse.{name}" for name in known} | {"retrain.py", "label_image.py"} <= set(commands)
    handler = command_line(lambda argv=None: 0).__code__
    for where, (module, name) in commands.items():
        main = getattr(module, name)
        assert main.__code__ is handler, f"{where}: {name} is not wrapped by errors.command_line"
        if where.startswith("tlcourse."):
            assert main.__wrapped__.__module__ == module.__name__  # its own main, functools.wraps by command_line
