"""Every figure the README quotes from bench/results/ matches the results file, to the printed precision.

A benchmark rerun that moves a figure fails here until the README says the new figure.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "bench" / "results"
PERCENT = re.compile(r"[+-]?\d+(?:\.\d+)?%")


def section(title_start: str) -> str:
    """The README text from the heading ``## <title_start>...`` to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title_start)}.*?(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"the README has no section '## {title_start}...'"
    return match.group(0)


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables in ``text``: each a list of rows (header first), each a list of cell texts."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def percents(cell: str) -> list[float]:
    return [float(p.rstrip("%")) for p in PERCENT.findall(cell)]


def same_to_printed_precision(printed: str, value: float) -> bool:
    """``printed`` ("49.4", "115", "0.9") is ``value`` rounded to as many decimals as it shows."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10**-decimals + 1e-9


def test_the_many_classes_tables_match_the_results_file():
    results = json.loads((RESULTS / "many_classes.json").read_text())
    text = section("Many classes")
    found = [t for t in tables(text) if any("top-1" in cell for cell in t[0])]
    assert len(found) == 2, "expected the 117-label table and the seed-scale table"
    for table, rows in zip(found, (results["techniques"], results["seed_scale"]["techniques"]), strict=True):
        header, body = table[0], table[1:]
        by_name = {row["name"]: row for row in rows}
        assert [line[0] for line in body] == [row["name"] for row in rows], "the README lists every row, in order"
        for line in body:
            row = by_name[line[0]]
            for title, cell in zip(header, line, strict=True):
                if title.startswith("top-1"):
                    expected = [row["accuracy"], row["interval"]["low"], row["interval"]["high"]]
                elif title.startswith("top-5"):
                    expected = [row["top5_accuracy"]]
                elif title.startswith("validation"):
                    expected = [row["validation_accuracy"]]
                elif title.startswith("against"):
                    comparison = row.get("comparison")
                    expected = [] if comparison is None else [comparison[k] for k in ("value", "low", "high")]
                else:
                    continue
                printed = PERCENT.findall(cell)
                assert len(printed) == len(expected), f"{line[0]}, {title}: {cell!r}"
                for text_value, value in zip(printed, expected, strict=True):
                    assert same_to_printed_precision(text_value.rstrip("%"), 100 * value), (
                        f"{line[0]}, {title}: README says {text_value}, the results file {100 * value:.2f}%"
                    )


def test_every_percentage_in_the_many_classes_prose_is_in_the_results_file():
    results = json.loads((RESULTS / "many_classes.json").read_text())
    values = []

    def collect(node):
        if isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
        elif isinstance(node, float) and -1.0 <= node <= 1.0:
            values.append(100 * node)

    collect(results)
    prose = "\n".join(line for line in section("Many classes").splitlines() if not line.startswith("|"))
    prose = re.sub(r"\d+% (?:bootstrap )?interval", "", prose)  # the confidence level, not a measurement
    for printed in PERCENT.findall(prose):
        number = printed.rstrip("%").lstrip("+")
        assert any(same_to_printed_precision(number.lstrip("-"), abs(v)) for v in values), (
            f"the README's many-classes prose says {printed}, which is not in bench/results/many_classes.json"
        )


SPEED_COLUMNS = {
    "caching": "caching",
    "retrain.py's way": "retrain_py",
    "keras recipe": "keras_recipe",
    "network alone": "network_only",
    "bfloat16 caching": "caching_bfloat16",
    "float32 caching": "caching_float32",
    "pillow only": "caching_pillow_only",
    "files written inline": "caching_writes_inline",
    "xla": "caching_xla",
    "tensorflow caching": "caching_tensorflow",
    "litert caching": "caching_litert",
}


def test_the_speed_table_matches_summary_json():
    summary_file = RESULTS / "summary.json"
    if not summary_file.is_file():
        pytest.skip("no bench/results/summary.json")
    contenders = json.loads(summary_file.read_text())["contenders"]
    speed = [t for t in tables(section("Speed")) if t[0] and t[0][0].startswith("backbone")]
    assert speed, "the README's Speed section has no table"
    checked = 0
    for line in speed[0][1:]:
        key = line[0].lower().replace("efficientnet-lite", "efficientnet_lite").replace("inception-v3", "inception_v3")
        assert key in contenders, f"README row {line[0]!r} is not in summary.json"
        for title, cell in zip(speed[0][0], line, strict=True):
            column = SPEED_COLUMNS.get(title.lower())
            if column is None or not cell:
                continue
            match = re.fullmatch(r"([\d.]+) \(([\d.]+)\)", cell)
            assert match, f"{line[0]}, {title}: expected 'images/s (CPU ms)', got {cell!r}"
            measured = contenders[key][column]
            assert same_to_printed_precision(match.group(1), measured["images_per_second"]), (line[0], title)
            assert same_to_printed_precision(match.group(2), measured["cpu_ms_per_image"]), (line[0], title)
            checked += 1
    assert checked >= 10


def numbers_in(value) -> list[float]:
    """Every number in a JSON value, however deeply nested."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [number for item in value for number in numbers_in(item)]
    return []


def test_every_decimal_in_the_speed_prose_is_in_the_bench_results():
    """The prose around the table (up to "Every figure is in"), minus figures it says come from an earlier run.

    Its figures come from summary.json, from caching_settings.json for the paired rounds of each setting, or
    from label_one_image.json (``bench/performance.py --part label_one_image``)."""
    summary_file = RESULTS / "summary.json"
    if not summary_file.is_file():
        pytest.skip("no bench/results/summary.json")
    summary = json.loads(summary_file.read_text())
    known = numbers_in(summary) + numbers_in(json.loads((RESULTS / "caching_settings.json").read_text()))
    known += numbers_in(json.loads((RESULTS / "label_one_image.json").read_text()))
    prose = section("Speed").split("Every figure is in")[0]
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("|"))
    prose = re.sub(r"\([^()]*earlier run[^()]*\)", "", prose)
    printed = re.findall(r"(?<![\w.])\d+\.\d+(?![\d.])", prose)  # "1.78x" counts
    assert len(printed) >= 20, "the Speed prose quotes fewer figures than expected: is the section there?"
    missing = [p for p in printed if not any(same_to_printed_precision(p, value) for value in known)]
    assert not missing, f"the README's Speed prose says {missing}, which bench/results/ does not hold"
    minutes = re.search(r"(\d+) minutes\)", prose)
    assert minutes and int(minutes.group(1)) == summary["bench_minutes"], "the run's length is not summary's"
