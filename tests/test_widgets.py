import io

import numpy as np
import pytest
from PIL import Image

from tlcourse import course, widgets
from tlcourse.data import scan_dataset


@pytest.mark.parametrize(
    "name, safe",
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/evil.png", "evil.png"),
        ("..\\..\\x.jpg", "x.jpg"),
        ("...", "upload"),
        ("chat é 1.jpg", "chat_1.jpg"),
    ],
)
def test_upload_names_cannot_leave_the_folder(name, safe):
    assert widgets.safe_upload_name(name) == safe


@pytest.fixture(scope="module")
def model(tmp_path_factory, stamps_dir):
    return course.ensure_retrained_model(stamps_dir, tmp_path_factory.mktemp("run"), steps=50)


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_upload_panel_labels_an_image_and_never_overwrites(model, tmp_path):
    panel = widgets.UploadPanel(model["graph"], model["labels"], tmp_path / "uploads")
    first = panel.handle_upload("../photo.png", png_bytes())
    second = panel.handle_upload("photo.png", png_bytes())
    assert first.path.parent == second.path.parent == tmp_path / "uploads"
    assert first.path.name == "photo.png" and second.path.name == "photo_1.png"
    assert len(first.top) == 5 and abs(sum(score for _, score in first.top) - 1) < 1e-3


def test_upload_panel_refuses_non_images_and_oversized_files(model, tmp_path):
    panel = widgets.UploadPanel(model["graph"], model["labels"], tmp_path / "uploads", max_bytes=1000)
    with pytest.raises(ValueError, match="not an image"):
        panel.handle_upload("x.jpg", b"<html>hello</html>")
    with pytest.raises(ValueError, match="upload limit"):
        panel.handle_upload("big.png", b"\0" * 2000)
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_retrain_panel_trains_with_its_settings(stamps_dir, tmp_path):
    dataset = scan_dataset(stamps_dir)
    panel = widgets.RetrainPanel(dataset, tmp_path / "bn")
    panel.steps.value = 50
    history, evaluation = panel.run()
    assert history.steps[-1] == 50
    assert [record.path for record in evaluation.records] == [record.path for record in dataset.split("test")]
    right = int(round(evaluation.accuracy * len(evaluation.labels)))
    assert right >= 9, f"{right} of {len(evaluation.labels)} test images after 50 steps (11 measured; chance is 1 in 5)"
    panel.learning_rate.value = panel.learning_rate.min  # the panel's learning rate is the one training uses
    _, slow = panel.run()
    assert slow.accuracy < evaluation.accuracy
