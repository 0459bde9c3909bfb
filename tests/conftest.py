"""Shared fixtures: the embedded backbone and dataset, sample photos, and a local HTTP server."""

import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest
import skimage

import tlcourse as tlc

SAMPLE_PHOTOS = Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="session")
def lite0():
    return tlc.backbones.load_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def stamps_dir():
    return tlc.datasets.stamps()


@pytest.fixture
def photo():
    """Path of a sample photo that the scikit-image wheel ships: photo('chelsea.png')."""
    return lambda name: SAMPLE_PHOTOS / name


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve a fresh folder on 127.0.0.1; yields (folder, base_url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def pytest_terminal_summary(terminalreporter):
    """The reliability figures: how many cases and trials ran, and how many lost or corrupted anything."""
    reliability = sys.modules.get("tests.test_reliability")  # only when that suite ran: importing it loads TensorFlow
    TALLY = getattr(reliability, "TALLY", None)
    if TALLY:
        terminalreporter.write_sep("=", "reliability")
        terminalreporter.write_line(
            f"bad-input cases: {TALLY['bad_input_cases']}, interruption trials: {TALLY['interruption_trials']}, "
            f"concurrency trials: {TALLY['concurrency_trials']}; lost or corrupted anything: "
            f"{TALLY['lost_or_corrupted']}"
        )
