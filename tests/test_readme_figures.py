"""The README's tables of measured figures are exactly what bench/readme.py makes from bench/results/.

A benchmark rerun that moves a figure fails here until `python bench/readme.py` has rewritten the
README. A missing results file fails too, with the benchmark to run.
"""

import copy
import re

import pytest

from bench import readme

README = readme.README.read_text()


def test_every_generated_table_equals_the_committed_one():
    assert readme.stale_tables(README) == [], "README.md is out of date: run python bench/readme.py"


@pytest.mark.parametrize("name", ["many_classes.json", "summary.json", "deploy.json", "label_one_image.json"])
def test_a_changed_figure_in_any_results_file_makes_the_readme_out_of_date(monkeypatch, name):
    """The check above can fail: one figure moved in the last decimal it prints makes some table stale."""
    real_load = readme.load
    moves = {
        "many_classes.json": lambda d: d["techniques"][0].update(accuracy=d["techniques"][0]["accuracy"] + 0.001),
        "summary.json": lambda d: d["contenders"]["inception_v3, camera"]["caching"].update(images_per_second=9.5),
        "deploy.json": lambda d: d["agreement"]["tflite_int8"]["all"].update(agree=118),
        "label_one_image.json": lambda d: d.update(label_one_image_tflite_process_seconds=0.31),
    }

    def moved(file_name):
        results = copy.deepcopy(real_load(file_name))
        if file_name == name:
            moves[name](results)
        return results

    monkeypatch.setattr(readme, "load", moved)
    assert readme.stale_tables(README) != []


def test_a_missing_results_file_is_an_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="summary.json is missing: run the benchmark"):
        readme.speed()


MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?%|(?<![\w.])\d+\.\d+(?![\d.])|\b\d+ of \d+\b")


def prose(title_start: str) -> str:
    """The section ``## <title_start>...`` without its generated tables, code spans and the confidence level."""
    match = re.search(rf"^## {re.escape(title_start)}.*?(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"the README has no section '## {title_start}...'"
    text = re.sub(
        r"<!-- bench/readme\.py: (\w+) -->.*?<!-- end of bench/readme\.py: \1 -->", "", match.group(0), flags=re.S
    )
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"95% (?:bootstrap )?interval", "", text)


@pytest.mark.parametrize(
    "title_start", ["The tutorial's commands", "Many classes", "Fine-tuning", "Image search", "Speed"]
)
def test_the_prose_around_the_tables_quotes_no_measured_figure(title_start):
    """A measured figure lives in a generated table or a results file; the prose says what it shows."""
    assert MEASURED.findall(prose(title_start)) == []
