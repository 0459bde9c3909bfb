"""Where the course keeps its files, and the one small-data switch for CI.

Every path is built from one project root, never from the current directory, so each notebook
finds the same data and models wherever its kernel starts.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# Where the course is published, and the one line every lesson's set-up cell runs on Colab to install it.
# tests/test_installed_lessons.py checks that each notebook uses exactly this line; change it here and there.
PACKAGE_SOURCE = "tlcourse @ git+https://github.com/tlcourse/tlcourse"
COLAB_INSTALL_LINE = f'!pip install -q "{PACKAGE_SOURCE}"'


def project_root() -> Path:
    """``$TLCOURSE_HOME``, else the repository checkout holding this package, else ``~/tlcourse``."""
    if os.environ.get("TLCOURSE_HOME"):
        return Path(os.environ["TLCOURSE_HOME"]).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.home() / "tlcourse"


def data_dir() -> Path:
    """Where datasets are materialised and Debian packages unpacked."""
    return project_root() / "data"


def models_dir() -> Path:
    """Where pretrained backbones are downloaded or converted (the classic ``--model_dir``)."""
    return project_root() / "models"


def small_data() -> bool:
    """True when ``TLCOURSE_SMALL=1``: notebooks and demos use fewer images and steps, same code path."""
    return os.environ.get("TLCOURSE_SMALL", "") not in ("", "0")
