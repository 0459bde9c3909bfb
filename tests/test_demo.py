import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_make_demo_retrains_on_stamps_and_labels_held_out_images(stamps_dir):
    result = subprocess.run([sys.executable, "-m", "tlcourse.demo"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = float(re.search(r"Final test accuracy on stamps: ([\d.]+)%", result.stdout).group(1))
    assert accuracy >= 85.0
    labelled = [line for line in result.stdout.splitlines() if "true: " in line and "predicted: " in line]
    assert len(labelled) == 5
