"""The graded exercises from the shell.

    python -m tlcourse.exercises list
    python -m tlcourse.exercises check NAME FILE.py[:FUNCTION] [--seed N]
    python -m tlcourse.exercises fill LESSON.ipynb OUTPUT.ipynb

``check`` loads FILE.py as a module, grades its FUNCTION (by default the one named NAME) and exits
0 when it passes, 1 when it does not (printing the teaching message), 2 on a usage error.
``fill`` writes a copy of a lesson with every stub replaced by the reference (``fill_stubs``): CI
runs it with ``TLCOURSE_EXPECT_PASS=1`` so that the path a correct answer takes runs too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from tlcourse import exercises
from tlcourse.errors import UsageError, command_line
from tlcourse.exercises import core


def load_function(spec: str, default_name: str):
    """The function named in ``FILE.py[:FUNCTION]``, loaded from the file's path."""
    path_text, name = spec, default_name
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and head:
        path_text, name = head, tail
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    module_name = f"_tlcourse_learner_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot load {path} as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # so that inspect can find the source (stub detection)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{path} has a syntax error at line {error.lineno}: {error.msg}") from None
    except Exception as error:  # the learner's file may raise anything while it loads
        raise UsageError(f"{path} raised {type(error).__name__} while loading: {error}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    function = getattr(module, name, None)
    if function is None:
        found = [n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == module_name]
        listed = f" (it defines: {', '.join(sorted(found))})" if found else ""
        raise UsageError(f"{path} defines no function {name!r}{listed}")
    if not callable(function):
        raise UsageError(f"{name!r} in {path} is not a function")
    return function


@command_line  # exit codes: tlcourse.errors (2 for a usage error, 1 for an answer that did not pass)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlcourse.exercises", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the exercises, with the lesson that teaches each")
    check = commands.add_parser("check", help="grade a function written in a file")
    check.add_argument("name", help="the exercise, e.g. softmax_cross_entropy")
    check.add_argument(
        "function", metavar="FILE.py[:FUNCTION]", help="where the function is (FUNCTION defaults to NAME)"
    )
    check.add_argument("--seed", type=int, default=None, help="repeat the random inputs of an earlier run")
    fill = commands.add_parser("fill", help="copy a lesson with its stubs filled by the references (for CI)")
    fill.add_argument("notebook", type=Path, help="the lesson, e.g. notebooks/03_retrain.ipynb")
    fill.add_argument("output", type=Path, help="where to write the filled copy")
    args = parser.parse_args(argv)

    if args.command == "list":
        width = max(len(name) for name in exercises.names())
        for name in exercises.names():
            exercise = exercises.REGISTRY[name]
            print(f"{name:<{width}}  {exercise.lesson:<22}  {name}{exercise.signature}")
        return 0
    if args.command == "fill":
        try:
            filled = exercises.fill_stubs(json.loads(args.notebook.read_text(encoding="utf-8")))
        except ValueError as error:  # not JSON, or a check of an exercise that does not exist
            raise UsageError(f"{args.notebook}: {error}") from None
        args.output.write_text(json.dumps(filled, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
        return 0
    if args.name not in exercises.REGISTRY:
        raise UsageError(f"no exercise named {args.name!r}; the exercises are: {', '.join(exercises.names())}")
    function = load_function(args.function, args.name)
    outcome = exercises.grade(args.name, function, args.seed)
    text = core.report(outcome, in_lesson=False)
    if not outcome.passed:
        text = text.replace(
            f'tlc.exercises.check("{args.name}", {args.name}, seed={outcome.seed})',
            f"python -m tlcourse.exercises check {args.name} {args.function} --seed {outcome.seed}",
        )
    print(text)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
