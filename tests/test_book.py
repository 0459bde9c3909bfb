"""make book: the lessons executed and rendered as a static site, with figures and launch buttons."""

import json
import re

import nbformat
import pytest

from tlcourse import book

LESSON = "01_prepare_dataset"  # quick, and it draws figures


@pytest.mark.slow
def test_the_site_shows_each_lessons_figures_and_launch_buttons(tmp_path):
    stored = book.notebooks_dir() / f"{LESSON}.ipynb"
    before = stored.read_bytes()
    index = book.build([LESSON], tmp_path / "book")  # small data under make test (TLCOURSE_SMALL=1)
    html = index.parent
    assert stored.read_bytes() == before  # the notebook in the repository keeps no outputs
    assert (html / "README.html").is_file()  # the lessons' index is the home page
    page = (html / f"{LESSON}.html").read_text(encoding="utf-8")
    figures = re.findall(r'<img[^>]+src="(_images/[^"]+\.png)"', page)
    assert figures, "no figure on the lesson's page"
    assert all((html / figure).stat().st_size > 1000 for figure in figures)  # real plots, not empty files
    notebook = f"notebooks/{LESSON}.ipynb"
    launch = {  # the theme's launch menu, not the badges in the lesson's first cell (which link the same pages)
        "Binder": f"https://mybinder.org/v2/gh/tlcourse/tlcourse/main?urlpath=lab/tree/{notebook}",
        "Colab": f"https://colab.research.google.com/github/tlcourse/tlcourse/blob/main/{notebook}",
    }
    for service, url in launch.items():
        button = rf'<a href="{re.escape(url)}" target="_blank"\s+class="btn[^"]*"\s+title="Launch on {service}"'
        assert re.search(button, page), f"no {service} launch button"
    executed = nbformat.read(tmp_path / "book" / "source" / f"{LESSON}.ipynb", as_version=4)
    assert all(cell.get("outputs") is not None for cell in executed.cells if cell.cell_type == "code")
    assert "Traceback" not in page


def test_a_failing_lesson_stops_the_build_with_its_error(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('planted')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    with pytest.raises(book.LessonFailed, match=r"(?s)broken.ipynb failed.*ValueError: planted"):
        book.execute(path, tmp_path / "out.ipynb")
    assert not (tmp_path / "out.ipynb").exists()


def test_lessons_are_found_in_order_and_a_wrong_name_says_which_exist():
    found = book.lessons()
    assert found == sorted(found) and len(found) >= 10
    assert book.lessons(["01"]) == [book.notebooks_dir() / f"{LESSON}.ipynb"]
    with pytest.raises(book.LessonFailed, match="names 0 lessons; known lessons: 00_"):
        book.lessons(["99_nothing"])
    toc = book.table_of_contents(book.lessons(["00", "01"]))
    assert toc.splitlines()[1:] == ["root: README", "chapters:", "- file: 00_check_setup", f"- file: {LESSON}"]
