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
from tlcourse.data import ImageFolderError, scan_dataset
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
    with pytest.raises(ImageFolderError, match=message) as error:
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
    """``python -u ARGUMENTS``: unbuffered, so that each line it prints can be waited for."""
    return subprocess.Popen(
        [sys.executable, "-u", *arguments], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def wait_for_line(child, text: str) -> None:
    """Read ``child``'s output until a line holds ``text``; fail if it ends first."""
    for line in child.stdout:
        if text in line:
            return
    pytest.fail(f"the child ended (code {child.wait()}) without printing {text!r}")


def wait_until(child, ready, what: str, timeout: float = 600) -> None:
    """Poll ``ready()`` until it is true; fail if ``child`` ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not ready_now(ready):
        if child.poll() is not None:
            pytest.fail(f"the child ended (code {child.returncode}) before {what}: a kill then would prove nothing")
        if time.monotonic() > deadline:
            pytest.fail(f"no sign of {what} after {timeout} s")
        time.sleep(0.005)


def ready_now(ready) -> bool:
    try:
        return bool(ready())
    except FileNotFoundError:  # a temporary was renamed or removed while it was looked at
        return False


def kill(child, what: str, finished: str = "DONE") -> None:
    """Kill ``child`` now; fail unless the kill landed before its work was done (it never printed ``finished``)."""
    child.send_signal(signal.SIGKILL)
    code = child.wait()
    rest = child.stdout.read()
    assert code == -signal.SIGKILL and finished not in rest, (
        f"the child finished its work (code {code}) after {what}, before the kill landed: the trial proves nothing"
    )


def temporaries(folder: Path, target: str) -> list[Path]:
    """The temporaries ``atomic.atomic_path`` writes for ``folder / target`` (``.NAME.tmp-PID-...``)."""
    return list(folder.glob(f".{target}.tmp-*")) if folder.is_dir() else []


def every_entry_is_right(dataset, backbone, cache) -> bool:
    """No entry may read as valid unless it equals a fresh computation."""
    store = bottlenecks.store_for(backbone, cache)
    for image in dataset.images:
        stored = store.read(image.sha256)
        if stored is not None and not np.allclose(stored, backbone.bottlenecks(load_image(image.path)), atol=1e-4):
            return False
    return True


def test_killing_a_caching_run_at_random_moments_loses_nothing(tmp_path, lite0):
    """Each run is killed once it has written 1 to 12 new entries (of 120), in the middle of its writes."""
    dataset = scan_dataset(image_folder(tmp_path / "images", 40))
    cache = tmp_path / "bn"
    rng = random.Random(0)

    def entries() -> int:
        return sum(1 for _ in cache.rglob("*.bn"))

    for _ in range(5):
        written_before, wanted = entries(), rng.randint(1, 12)
        child = start(["-c", CACHE_CHILD, str(dataset.root), str(cache)], tmp_path)
        wait_for_line(child, "START")
        what = f"writing {wanted} new cache entries"
        wait_until(child, lambda at_least=written_before + wanted: entries() >= at_least, what)
        kill(child, what)
        ok = written_before < entries() < len(dataset.images) and every_entry_is_right(dataset, lite0, cache)
        record("interruption_trials", ok)
        assert ok, (written_before, entries())
    final = bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
    ok = final.hits + final.computed == len(dataset.images) and every_entry_is_right(dataset, lite0, cache)
    ok = ok and final.computed > 0 and not list(cache.rglob("*.tmp-*"))  # the killed runs' temporaries are cleaned up
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
    """Killed after start-up, after training, while writing the graph, and while writing the Keras model."""
    image_dir = image_folder(tmp_path / "images", 12)
    out, cache = tmp_path / "out", tmp_path / "bn"
    first = subprocess.run([sys.executable, *retrain_arguments(image_dir, out, cache, 50)], capture_output=True)
    assert first.returncode == 0
    probe = next(image_dir.rglob("*.jpg"))

    def printed(text: str):
        return lambda child: wait_for_line(child, text)

    def being_written(name: str):
        return lambda child: wait_until(child, lambda: temporaries(out, name), f"a temporary {name} in {out}")

    moments = {
        "start-up (the engine line)": printed("engine:"),
        "training (the test accuracy line)": printed("Final test accuracy"),
        "the graph's temporary file": being_written("graph.pb"),
        "the Keras model's temporary file": being_written("graph.keras"),
    }
    for moment, wait in moments.items():
        child = start(retrain_arguments(image_dir, out, cache, 300), tmp_path)
        wait(child)
        kill(child, moment, finished="wrote ")
        ok = outputs_load(out, probe)
        record("interruption_trials", ok)
        assert ok, f"killed after {moment}, the previous outputs no longer load"


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

    def do_GET(self):  # the name http.server calls
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


def kill_at_moments(code: str, arguments: list[str], cwd: Path, moments: dict, check) -> None:
    """For each moment, start ``python -c code``, kill it once ``moments[what]()`` is true, and ``check()`` the rest."""
    for what, ready in moments.items():
        child = start(["-c", code, *arguments], cwd)
        wait_for_line(child, "START")
        wait_until(child, ready, what)
        kill(child, what)
        ok = check()
        record("interruption_trials", ok)
        assert ok, f"killed after {what}"


def grown_to(folder: Path, target: str, size: int):
    """A moment: a temporary of ``folder / target`` holds at least ``size`` bytes."""
    return lambda: any(path.stat().st_size >= size for path in temporaries(folder, target))


DOWNLOAD_CHILD = """
import sys
from tlcourse.download import download
print("START", flush=True)
download(sys.argv[1], sys.argv[2], sys.argv[3])
print("DONE", flush=True)
"""


def test_killing_a_download_leaves_no_half_file_and_the_next_one_cleans_up(tmp_path, slow_server):
    payload = random.Random(2).randbytes(4 << 20)  # about 2 s at the server's pace
    digest = hashlib.sha256(payload).hexdigest()
    url = slow_server(payload, "weights.bin")
    folder = tmp_path / "downloads"
    target = folder / "weights.bin"

    def nothing_half_written() -> bool:
        return not target.exists() or target.read_bytes() == payload

    rng = random.Random(3)
    sizes = [1] + sorted(rng.randrange(len(payload) * 9 // 10) for _ in range(4))  # the first bytes, then on to 90%
    moments = {f"{size:,} bytes downloaded": grown_to(folder, "weights.bin", size) for size in sizes}
    kill_at_moments(DOWNLOAD_CHILD, [url, str(target), digest], tmp_path, moments, nothing_half_written)
    download.download(url, target, digest)
    ok = target.read_bytes() == payload and [p.name for p in folder.iterdir()] == ["weights.bin"]
    record("interruption_trials", ok)
    assert ok, sorted(p.name for p in folder.iterdir())


BUILD_CHILD = """
import sys
from tlcourse import datasets
print("START", flush=True)
datasets.flowers(sys.argv[1], url=sys.argv[2], expected_hash=sys.argv[3])
print("DONE", flush=True)
"""


def test_killing_a_dataset_build_leaves_no_half_folder_and_the_next_one_cleans_up(tmp_path, slow_server):
    per_label = 1000
    members = {f"flower_photos/{label}/{i}.jpg": jpeg(seed=i) for label in ("daisy", "roses") for i in range(per_label)}
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
            return all(len(list((folder / label).iterdir())) == per_label for label in ("daisy", "roses"))
        return (folder / "daisy" / "0.jpg").read_bytes() == b"half"  # the old folder, never lost

    def extracted(count: int):
        """A moment: the new folder, still a temporary, holds ``count`` images."""
        return lambda: any(len(list(path.rglob("*.jpg"))) >= count for path in temporaries(data_dir, "flowers"))

    rng = random.Random(4)
    downloads = data_dir / "downloads"
    moments = {
        f"{size:,} bytes downloaded": grown_to(downloads, "flower_photos.tar", size) for size in (1, len(payload) // 2)
    }
    moments |= {f"{count} images extracted": extracted(count) for count in sorted(rng.sample(range(1, per_label), 3))}
    arguments = [str(data_dir), url, hashlib.sha256(payload).hexdigest()]
    kill_at_moments(BUILD_CHILD, arguments, tmp_path, moments, whole_or_as_before)
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
