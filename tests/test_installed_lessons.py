"""Every lesson runs from an installed wheel, outside the repository, with its graded stubs filled.

This is how Colab runs the course: `pip install` the package, no checkout, the notebook in a folder
of its own. The slow test builds the wheel, installs it into a fresh folder with
`pip install --no-deps --target`, copies every lesson into a fresh folder outside the repository
with each stub replaced by the reference solution (`tlc.exercises.fill_stubs`, the path a learner
takes after a correct answer) and runs them all with nbval, `TLCOURSE_SMALL=1` and
`TLCOURSE_EXPECT_PASS=1` (a graded cell whose reference fails its own grader stops the lesson).

The children import the wheel, never the repository: the current directory is outside it, the
repository is not on `sys.path`, and the editable install's finder (which would quietly serve a
module missing from the wheel out of the checkout) is removed at start-up by a `sitecustomize`
placed first on `PYTHONPATH`. A last cell appended to each copy asserts that every `tlcourse`
module the lesson loaded came from the installed folder.

`TLCOURSE_HOME` is a fresh folder whose `data` and `bench` are symbolic links to the repository's:
the Debian packages and datasets are reused, and the lessons that show benchmark results read
them through `tlc.config.project_root() / "bench" / "results"`. `models` and `runs` start empty.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tlcourse import config
from tlcourse.exercises import fill_stubs

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

# Imported first in every child interpreter: drop the editable install's finder, so that only the wheel is importable.
SITECUSTOMIZE = """\
import sys

sys.meta_path[:] = [finder for finder in sys.meta_path if "_EditableFinder" not in getattr(finder, "__name__", "")]
"""

# Appended to each copied lesson: every tlcourse module it used came from the installed wheel.
PROVENANCE_CELL = """\
import os as _os
import sys as _sys

_installed = _os.path.realpath(_os.environ["TLCOURSE_INSTALLED_AT"]) + _os.sep
_loaded = {name: getattr(module, "__file__", None) for name, module in _sys.modules.items()
           if name == "tlcourse" or name.startswith("tlcourse.")}
_elsewhere = {name: path for name, path in _loaded.items()
              if path and not _os.path.realpath(path).startswith(_installed)}
assert _loaded and not _elsewhere, f"tlcourse modules not imported from the installed wheel: {_elsewhere}"
print(f"{len(_loaded)} tlcourse modules, all from the installed wheel")
"""


def setup_cell_source(path: Path) -> str:
    return "".join(json.loads(path.read_text())["cells"][1]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_setup_cell_installs_the_course_with_the_one_colab_line(path):
    """The install line lives in `tlcourse.config.COLAB_INSTALL_LINE`; every set-up cell uses exactly it."""
    lines = [line.strip() for line in setup_cell_source(path).splitlines() if "pip install" in line]
    assert lines == [config.COLAB_INSTALL_LINE], f"{path.name}: the set-up cell should run {config.COLAB_INSTALL_LINE}"


def build_and_install_wheel(tmp: Path) -> Path:
    """The wheel built from the checkout, installed with `pip install --no-deps --target`; returns that folder.

    It is built from a clean copy of the sources, so that a stale `build/` folder in the checkout
    (which setuptools would pack) can neither add modules to the wheel nor hide missing ones.
    """
    source, wheels, site = tmp / "source", tmp / "wheel", tmp / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tlcourse", source / "tlcourse", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    offline = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
    )
    if offline.returncode != 0:  # the venv's setuptools (65) is older than pyproject.toml's license needs: fetch one
        subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("tlcourse-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True)
    return site


def copy_lessons_with_stubs_filled(folder: Path) -> None:
    folder.mkdir()
    for path in NOTEBOOKS:
        notebook = fill_stubs(json.loads(path.read_text()))
        cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": PROVENANCE_CELL}
        if (notebook.get("nbformat"), notebook.get("nbformat_minor", 0)) >= (4, 5):
            cell["id"] = "tlcourse-installed-provenance"  # nbformat 4.5 wants an id on every cell
        notebook["cells"].append(cell)
        (folder / path.name).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_every_lesson_runs_from_the_installed_wheel_with_its_stubs_filled(tmp_path):
    site = build_and_install_wheel(tmp_path)
    isolation = tmp_path / "isolation"
    isolation.mkdir()
    (isolation / "sitecustomize.py").write_text(SITECUSTOMIZE)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("data", "bench"):
        (home / name).symlink_to(REPO / name, target_is_directory=True)
    lessons = tmp_path / "lessons"
    copy_lessons_with_stubs_filled(lessons)

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "COV_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(isolation), str(site)]),
        TLCOURSE_HOME=str(home),
        TLCOURSE_SMALL="1",
        TLCOURSE_EXPECT_PASS="1",
        TLCOURSE_INSTALLED_AT=str(site),
    )
    where = subprocess.run(
        [sys.executable, "-c", "import tlcourse, tlcourse.exercises, tlcourse.retrain; print(tlcourse.__file__)"],
        cwd=lessons,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(site.resolve()), f"the children import tlcourse from {where}"
    assert not Path(where).resolve().is_relative_to(REPO)

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "--nbval-cell-timeout=1800",
         "-p", "no:cacheprovider", "-q", "-rf", str(lessons)],
        cwd=lessons,
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    (tmp_path / "nbval.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, (
        f"lessons failed from the installed wheel (full log: {tmp_path / 'nbval.log'}):\n" + run.stdout[-12000:]
    )
