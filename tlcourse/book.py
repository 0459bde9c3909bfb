"""The course as a static site: every lesson executed, with its outputs and figures, and launch buttons.

    python -m tlcourse.book                     # all lessons, at full size: what ``make book`` runs
    python -m tlcourse.book 01_prepare_dataset  # some lessons only (TLCOURSE_SMALL=1: small data)

Each lesson is executed here (``nbclient``, in the ``notebooks`` folder, as JupyterLab and nbval
run it) into ``<output>/source``; the notebooks in the repository stay without outputs. Then
Jupyter Book 1.x (Sphinx with its book theme, installed from PyPI, nothing fetched at build
time) renders them, without executing them again, into ``<output>/_build/html``: one page per
lesson with its outputs and figures, ``notebooks/README.md`` as the home page, and on each lesson
a launch menu that opens it on Binder or Colab. A lesson that fails stops the build with the cell
that failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tlcourse import config
from tlcourse.errors import TLCourseError, command_line

REPOSITORY = "https://github.com/tlcourse/tlcourse"  # the README's Binder and Colab badges point here too
CELL_TIMEOUT = 900  # seconds, as make test gives nbval
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


class LessonFailed(TLCourseError, RuntimeError):
    """A lesson raised while it was executed for the site."""


def notebooks_dir() -> Path:
    return config.project_root() / "notebooks"


def lessons(names: list[str] | None = None) -> list[Path]:
    """The lessons' notebooks in order; ``names`` (``01_prepare_dataset``, or a prefix like ``01``) picks some."""
    found = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return found
    chosen = []
    for name in names:
        matches = [path for path in found if path.stem == name or path.stem.startswith(f"{name}_")]
        if len(matches) != 1:
            known = ", ".join(path.stem for path in found)
            raise LessonFailed(f"{name!r} names {len(matches)} lessons; known lessons: {known}")
        chosen += matches
    return chosen


def site_config() -> str:
    """Jupyter Book's ``_config.yml``: no execution (done before), launch buttons to Binder and Colab."""
    return f"""\
title: "tlcourse: transfer learning for image classification"
author: the tlcourse authors
only_build_toc_files: true
execute:
  execute_notebooks: "off"
repository:
  url: {REPOSITORY}
  path_to_book: notebooks
  branch: main
launch_buttons:
  notebook_interface: jupyterlab
  binderhub_url: https://mybinder.org
  colab_url: https://colab.research.google.com
html:
  use_repository_button: true
sphinx:
  config:
    html_show_copyright: false
    suppress_warnings: ["myst.xref_missing", "myst.header"]
"""


def table_of_contents(pages: list[Path]) -> str:
    return "format: jb-book\nroot: README\nchapters:\n" + "".join(f"- file: {page.stem}\n" for page in pages)


def execute(notebook: Path, target: Path) -> float:
    """Run ``notebook`` top to bottom in its own folder and write it, with outputs, to ``target``; seconds."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    content = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        content, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        message = ANSI_CODES.sub("", str(error)).strip().splitlines()  # IPython colours its tracebacks
        raise LessonFailed(f"{notebook.name} failed:\n" + "\n".join(message[-30:])) from None
    nbformat.write(content, target)
    return time.perf_counter() - started


def build(names: list[str] | None = None, output: str | Path | None = None) -> Path:
    """Execute the lessons (``names``, or all), render the site, and return its ``index.html``."""
    output = Path(output or config.project_root() / "runs" / "book").resolve()
    pages = lessons(names)
    source = output / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    shutil.copy(notebooks_dir() / "README.md", source / "README.md")
    (source / "_config.yml").write_text(site_config(), encoding="utf-8")
    (source / "_toc.yml").write_text(table_of_contents(pages), encoding="utf-8")
    for page in pages:
        print(f"executing {page.name} ...", flush=True)
        print(f"  {execute(page, source / page.name):.0f} s", flush=True)
    shutil.rmtree(output / "_build", ignore_errors=True)  # nothing left from an earlier build's lessons
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source), "--path-output", str(output)]
    built = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    index = output / "_build" / "html" / "index.html"
    if built.returncode != 0 or not index.is_file():
        raise LessonFailed(f"jupyter-book could not build the site:\n{(built.stdout + built.stderr)[-3000:]}")
    return index


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlcourse.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lessons to include (default: all), e.g. 01_prepare_dataset")
    parser.add_argument("--output", default=None, help="build folder (default: runs/book in the project)")
    args = parser.parse_args(argv)
    index = build(args.lessons, args.output)
    print(f"the site: {index} (open it in a browser; the folder {index.parent} can be served as it is)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
