"""A quiet command line: TensorFlow's start-up notes hidden, real warnings and errors kept (tlcourse.quiet)."""

import subprocess
import sys
from pathlib import Path

from tests.test_tflite import small_model
from tlcourse import export

REPO = Path(__file__).resolve().parents[1]
FAKE_TENSORFLOW = """
import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1.0 1 stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used\\n")
os.write(2, b"W0000 00:00:1.0 1 something.cc:1] a real warning\\n")

class config:
    @staticmethod
    def list_physical_devices():
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error (303)\\n")
        os.write(2, b"E0000 00:00:1.0 1 other.cc:2] a real error\\n")
        return []
"""


def test_start_up_notes_are_hidden_and_everything_else_is_kept(tmp_path):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)  # prints what TensorFlow prints
    script = "from tlcourse.quiet import import_tensorflow; import_tensorflow(); print('done')"
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0 and run.stdout == "done\n", run.stderr
    assert run.stderr.splitlines() == [
        "W0000 00:00:1.0 1 something.cc:1] a real warning",
        "E0000 00:00:1.0 1 other.cc:2] a real error",
    ]


def test_label_image_through_tensorflow_prints_no_start_up_notes(tmp_path, photo):
    export.write_frozen_graph(small_model(), tmp_path / "g.pb")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    command = [sys.executable, str(REPO / "label_image.py"), str(photo("chelsea.png")), f"--graph={tmp_path / 'g.pb'}"]
    run = subprocess.run([*command, f"--labels={tmp_path / 'labels.txt'}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "(score = " in run.stdout
    assert run.stderr == "", run.stderr
