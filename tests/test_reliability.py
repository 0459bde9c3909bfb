"""Reliability: bad inputs, interruptions, concurrent runs, full and read-only disks.

`make reliability` runs this file alone and prints how many cases and trials ran and how many
lost or corrupted anything (must be 0); `make test` runs it too. Every file is built here.
"""

import hashlib
import http.server
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images_factory import encoded, jpeg, labelled_folder, rgb, write
from tlcourse import atomic, bottlenecks, datasets, download, label, retrain
from tlcourse.data import scan_dataset
from tlcourse.images import load_image

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[1]
TALLY = Counter()  # read by conftest.py's summary: cases, trials, and how many lost anything


def record(kind: str, ok: bool) -> None:
    TALLY[kind] += 1
    if not ok:
        TALLY["lost_or_corrupted"] += 1


# ---------------------------------------------------------------- bad inputs
def cmyk_jpeg():
    return encoded(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG")


def exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(rgb(width=40, height=30, seed=3), "JPEG", exif=exif)


def animated_gif():
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])


def truncated_jpeg():
    data = jpeg(seed=11, width=300, height=300)
    return data[: len(data) // 2]


FILE_CASES = {  # file name -> (bytes, expected: "ok" or a word of the reported reason)
    "truncated.jpg": (truncated_jpeg(), "truncated"),
    "zero.jpg": (b"", "empty"),
    "png_named.jpg": (encoded(rgb(seed=21), "PNG"), "ok"),
    "webp_named.jpg": (encoded(rgb(seed=22), "WEBP"), "ok"),
    "bmp_named.jpg": (encoded(rgb(seed=23), "BMP"), "ok"),
    "gif_named.jpg": (encoded(rgb(seed=24), "GIF"), "ok"),
    "animated.gif": (animated_gif(), "ok"),
    "photo.tiff": (encoded(rgb(seed=25), "TIFF"), "ok"),
    "cmyk.jpg": (cmyk_jpeg(), "ok"),
    "sixteen_bit.png": (encoded(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"), "ok"),
    "grey.png": (encoded(Image.new("L", (20, 20), 90), "PNG"), "ok"),
    "palette.png": (encoded(rgb(seed=26).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok"),
    "rgba.png": (encoded(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "PNG"), "ok"),
    "rotated.jpg": (exif_rotated(), "ok"),
    "bomb.png": (encoded(Image.new("L", (12000, 8000)), "PNG", optimize=True), "decompression bomb"),
    "text.jpg": (b"a shopping list, not a photo\n", "not an image"),
    "page.jpg": (b"<!DOCTYPE html><html><body>Not found</body></html>", "not an image"),
}


def build_messy_dataset(root: Path) -> Path:
    for i in range(4):
        write(root / "with space" / f"{i}.jpg", jpeg(seed=100 + i))
        write(root / "ünïcødé" / f"{i}.jpg", jpeg(seed=200 + i))
        write(root / "semi;colon&'quote" / f"{i}.jpg", jpeg(seed=300 + i))
    for name, (data, _) in FILE_CASES.items():
        write(root / "with space" / "nested" / "deeper" / name, data)
    write(root / "one image" / "only.jpg", jpeg(seed=400))
    (root / "empty label").mkdir()
    write(root / "ünïcødé" / ".DS_Store", b"\0\1")
    write(root / "ünïcødé" / "Thumbs.db", b"\0\1")
    write(root / "ünïcødé" / "._0.jpg", b"\0\1")
    (root / "ünïcødé" / "loop").symlink_to(root / "ünïcødé", target_is_directory=True)
    (root / "ünïcødé" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    write(root / "semi;colon&'quote" / "in two labels.jpg", jpeg(seed=500))
    write(root / "with space" / "in two labels.jpg", jpeg(seed=500))
    return root


def test_every_bad_input_is_handled_and_reported(tmp_path, lite0):
    root = build_messy_dataset(tmp_path / "messy")
    dataset = scan_dataset(root)
    report = bottlenecks.cache_bottlenecks(dataset.images, lite0, tmp_path / "bn", progress=False)
    reasons = {item.path.name: item.reason for item in dataset.skipped + report.failures}
    _, cached = bottlenecks.load_bottlenecks(dataset.images, lite0, tmp_path / "bn")
    cached_names = {record.path.name for record in cached}
    for name, (_, expected) in FILE_CASES.items():
        ok = name in cached_names if expected == "ok" else expected in reasons.get(name, "")
        record("bad_input_cases", ok)
        assert ok, (name, reasons.get(name))
    checks = {
        "unicode, spaces and unsafe characters in labels": {"with space", "ünïcødé", "semi;colon&'quote"}
        <= set(dataset.class_names),
        "a label with one image is kept and warned": "one image" in dataset.class_names
        and any("'one image' has 1 images" in n for n in dataset.notes),
        "an empty label is left out and said": any("'empty label' has no usable images" in n for n in dataset.notes),
        "OS debris and hidden files are ignored": not any(n in reasons for n in (".DS_Store", "Thumbs.db", "._0.jpg")),
        "a symlink loop is not followed twice": sum(r.label == "ünïcødé" for r in dataset.images) == 4,
        "a dangling link is reported": "dangling.jpg" in reasons,
        "an image in two labels is kept in neither and said": "also in label" in reasons.get("in two labels.jpg", ""),
        "nested folders are read": any(r.relative.startswith("nested/deeper/") for r in dataset.images),
    }
    for description, ok in checks.items():
        record("bad_input_cases", ok)
        assert ok, description
    vectors, _ = bottlenecks.load_bottlenecks(dataset.images, lite0, tmp_path / "bn")
    assert np.isfinite(vectors).all()


@pytest.mark.parametrize(
    "folders, message",
    [({"Cat": 3, "cat": 3, "dog": 3}, "'Cat' and 'cat'"), ({"cat": 5}, "at least 2"), ({}, "at least 2")],
)
def test_folder_level_problems_are_clear_errors(tmp_path, folders, message):
    root = tmp_path / "d"
    root.mkdir()
    for name, count in folders.items():
        for i in range(count):
            write(root / name / f"{i}.jpg", jpeg(seed=zlib.crc32(f"{name}{i}".encode())))
    with pytest.raises(ValueError, match=message) as error:
        scan_dataset(root)
    record("bad_input_cases", str(root) in str(error.value))
    assert str(root) in str(error.value)


def test_the_classic_command_on_a_bad_folder_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "retrain.py"), f"--image_dir={tmp_path / 'missing'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    ok = result.returncode == 1 and "Traceback" not in result.stderr and "not a folder" in result.stderr
    record("bad_input_cases", ok)
    assert ok, result.stderr[-2000:]


# ---------------------------------------------------------------- interruptions
CACHE_CHILD = """
import sys, tlcourse as tlc
dataset = tlc.data.scan_dataset(sys.argv[1])
backbone = tlc.backbones.load_backbone("efficientnet_lite0")
print("START", flush=True)
tlc.bottlenecks.cache_bottlenecks(dataset.images, backbone, sys.argv[2], batch_size=8, progress=False)
print("DONE", flush=True)
"""


def image_folder(root: Path, per_label: int) -> Path:
    return labelled_folder(root, per_label=per_label, width=160, height=120)


def start(arguments, cwd):
    return subprocess.Popen(
        [sys.executable, *arguments], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def every_entry_is_right(dataset, backbone, cache) -> bool:
    """No entry may read as valid unless it equals a fresh computation."""
    store = bottlenecks.store_for(backbone, cache)
    for image in dataset.images:
        stored = store.read(image.sha256)
        if stored is not None and not np.allclose(stored, backbone.bottlenecks(load_image(image.path)), atol=1e-4):
            return False
    return True


def test_killing_a_caching_run_at_random_moments_loses_nothing(tmp_path, lite0):
    dataset = scan_dataset(image_folder(tmp_path / "images", 20))
    cache = tmp_path / "bn"
    rng = random.Random(0)
    for _ in range(5):
        child = start(["-c", CACHE_CHILD, str(dataset.root), str(cache)], tmp_path)
        assert child.stdout.readline().strip() == "START"
        time.sleep(rng.uniform(0.0, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        ok = every_entry_is_right(dataset, lite0, cache)
        record("interruption_trials", ok)
        assert ok
    final = bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
    ok = final.hits + final.computed == len(dataset.images) and every_entry_is_right(dataset, lite0, cache)
    ok = ok and not list(cache.rglob("*.tmp-*"))  # the killed runs' temporaries are cleaned up
    record("interruption_trials", ok)
    assert ok


def retrain_arguments(image_dir, out, cache, steps):
    return [
        str(REPO / "retrain.py"),
        f"--image_dir={image_dir}",
        f"--bottleneck_dir={cache}",
        f"--output_graph={out / 'graph.pb'}",
        f"--output_labels={out / 'labels.txt'}",
        f"--how_many_training_steps={steps}",
        "--summaries_dir=",
        "--architecture=efficientnet_lite0",
        "--precision=float32",  # the lite0 fixture's: caches of one precision are never read by the other
    ]


def outputs_load(out: Path, probe: Path) -> bool:
    try:
        (labelled,) = label.label_images([probe], out / "graph.pb", out / "labels.txt")
        keras_model = label.load_classifier(out / "graph.keras")
        report = json.loads((out / "graph.report.json").read_text())
    except Exception:
        return False
    return len(labelled.top) == 3 and keras_model(load_image(probe)[None]).shape == (1, 3) and "accuracy" in report


def test_killing_a_retrain_never_breaks_the_previous_outputs(tmp_path):
    image_dir = image_folder(tmp_path / "images", 12)
    out, cache = tmp_path / "out", tmp_path / "bn"
    first = subprocess.run([sys.executable, *retrain_arguments(image_dir, out, cache, 50)], capture_output=True)
    assert first.returncode == 0
    probe = next(image_dir.rglob("*.jpg"))
    rng = random.Random(1)
    for _ in range(4):
        child = start(retrain_arguments(image_dir, out, cache, 300), tmp_path)
        time.sleep(rng.uniform(3.0, 9.0))  # start-up, training and writing all take part of this span
        child.send_signal(signal.SIGKILL)
        child.wait()
        ok = outputs_load(out, probe)
        record("interruption_trials", ok)
        assert ok


def test_two_retrains_sharing_one_cache_both_finish_and_agree(tmp_path, lite0):
    dataset = scan_dataset(image_folder(tmp_path / "images", 15))
    cache = tmp_path / "bn"
    for trial in range(2):
        children = [
            start(retrain_arguments(dataset.root, tmp_path / f"out{trial}{i}", cache, 100), tmp_path) for i in (0, 1)
        ]
        codes = [child.wait(timeout=600) for child in children]
        ok = codes == [0, 0] and every_entry_is_right(dataset, lite0, cache)
        ok = ok and all(outputs_load(tmp_path / f"out{trial}{i}", dataset.images[0].path) for i in (0, 1))
        record("concurrency_trials", ok)
        assert ok, codes
        if trial == 0:
            for entry in cache.rglob("*.bn"):  # the second trial starts cold again
                entry.unlink()


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at about 2 MB/s, so that a kill lands in the middle of a download."""

    def do_GET(self):  # noqa: N802 (the http.server name)
        payload = self.server.payload
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            for start in range(0, len(payload), 1 << 15):
                self.wfile.write(payload[start : start + (1 << 15)])
                time.sleep(0.015)
        except (BrokenPipeError, ConnectionResetError):  # the client was killed
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    """Yields a function that serves bytes slowly on 127.0.0.1 and returns their URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(payload: bytes, name: str) -> str:
        server.payload = payload
        return f"http://127.0.0.1:{server.server_port}/{name}"

    yield serve
    server.shutdown()
    server.server_close()


def kill_at_random_moments(code: str, arguments: list[str], cwd: Path, seed: int, longest: float, check) -> None:
    """Start ``python -c code`` five times, kill it at a random moment, and ``check()`` what it left."""
    rng = random.Random(seed)
    for _ in range(5):
        child = start(["-c", code, *arguments], cwd)
        assert child.stdout.readline().strip() == "START"
        time.sleep(rng.uniform(0.0, longest))
        child.send_signal(signal.SIGKILL)
        child.wait()
        ok = check()
        record("interruption_trials", ok)
        assert ok


DOWNLOAD_CHILD = """
import sys
from tlcourse.download import download
print("START", flush=True)
download(sys.argv[1], sys.argv[2], sys.argv[3])
"""


def test_killing_a_download_leaves_no_half_file_and_the_next_one_cleans_up(tmp_path, slow_server):
    payload = random.Random(2).randbytes(4 << 20)  # about 2 s at the server's pace
    digest = hashlib.sha256(payload).hexdigest()
    url = slow_server(payload, "weights.bin")
    folder = tmp_path / "downloads"
    target = folder / "weights.bin"

    def nothing_half_written() -> bool:
        return not target.exists() or target.read_bytes() == payload

    kill_at_random_moments(DOWNLOAD_CHILD, [url, str(target), digest], tmp_path, 3, 2.5, nothing_half_written)
    download.download(url, target, digest)
    ok = target.read_bytes() == payload and [p.name for p in folder.iterdir()] == ["weights.bin"]
    record("interruption_trials", ok)
    assert ok, sorted(p.name for p in folder.iterdir())


BUILD_CHILD = """
import sys
from tlcourse import datasets
print("START", flush=True)
datasets.flowers(sys.argv[1], url=sys.argv[2], expected_hash=sys.argv[3])
"""


def test_killing_a_dataset_build_leaves_no_half_folder_and_the_next_one_cleans_up(tmp_path, slow_server):
    members = {f"flower_photos/{label}/{i}.jpg": jpeg(seed=i) for label in ("daisy", "roses") for i in range(400)}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:  # uncompressed: a download, then a real extraction
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    payload = archive.getvalue()
    url = slow_server(payload, "flower_photos.tar")
    data_dir = tmp_path / "data"
    folder = data_dir / "flowers"
    (folder / "daisy").mkdir(parents=True)  # a folder an older version left unfinished: to be replaced
    (folder / "daisy" / "0.jpg").write_bytes(b"half")

    def whole_or_as_before() -> bool:
        atomic.recover(folder)  # what the next run does first: a kill between two renames is undone
        if (folder / datasets.COMPLETE).is_file():
            return all(len(list((folder / label).iterdir())) == 400 for label in ("daisy", "roses"))
        return (folder / "daisy" / "0.jpg").read_bytes() == b"half"  # the old folder, never lost

    arguments = [str(data_dir), url, hashlib.sha256(payload).hexdigest()]
    longest = len(payload) / 2e6 + 3.0
    kill_at_random_moments(BUILD_CHILD, arguments, tmp_path, 4, longest, whole_or_as_before)
    datasets.flowers(data_dir, url=url, expected_hash=arguments[2])
    leftovers = sorted(p.name for p in data_dir.iterdir()) + sorted(p.name for p in (data_dir / "downloads").iterdir())
    ok = whole_or_as_before() and (folder / datasets.COMPLETE).is_file()
    ok = ok and leftovers == ["downloads", "flowers", "flower_photos.tar"]
    record("interruption_trials", ok)
    assert ok, leftovers


# ---------------------------------------------------------------- full or read-only disk
@pytest.fixture
def small_mount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    target = tmp_path / "mounted"
    target.mkdir()
    mounted = []

    def mount(options):
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("options, message", [("size=256k", "free some disk space"), ("ro", "read-only")])
def test_a_full_or_read_only_output_folder_is_a_clear_error(tmp_path, small_mount, options, message, capsys):
    image_dir = image_folder(tmp_path / "images", 8)
    out = small_mount(options)
    arguments = retrain_arguments(image_dir, out, tmp_path / "bn", 20)[1:]
    code = retrain.main(arguments)
    error = capsys.readouterr().err
    leftovers = [p.name for p in out.iterdir()]
    ok = code == 1 and message in error and "Traceback" not in error and leftovers == []
    record("bad_input_cases", ok)
    assert ok, (code, error[-1000:], leftovers)
