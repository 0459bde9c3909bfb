"""Interactive panels for the notebooks (ipywidgets).

- ``RetrainPanel`` (03_retrain): sliders for steps, learning rate and batch size and a backbone
  menu; retrains the new layer on cached bottlenecks in seconds and redraws the curves.
- ``UploadPanel`` (05_label_new_images): upload a photo and see its top 5 labels. Only images
  are accepted, up to a size limit, and files are only ever written inside the upload folder.

Each panel's action is an ordinary method (``run``, ``handle_upload``), so it can be called and
tested without a browser.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from PIL import Image

from tlcourse import backbones, label, pipeline, plots, train
from tlcourse.atomic import atomic_path
from tlcourse.images import ImageError, load_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class RetrainPanel:
    """Retrain the final layer with other settings, on cached bottlenecks, and redraw the curves."""

    def __init__(self, dataset, bottleneck_dir, backbone_names=("efficientnet_lite0", "efficientnet_lite2")):
        self.dataset = dataset
        self.bottleneck_dir = Path(bottleneck_dir)
        self.steps = widgets.IntSlider(500, min=50, max=4000, step=50, description="steps")
        self.learning_rate = widgets.FloatLogSlider(0.01, base=10, min=-4, max=0, description="learning rate")
        self.batch_size = widgets.IntSlider(100, min=10, max=500, step=10, description="batch size")
        self.backbone = widgets.Dropdown(options=list(backbone_names), description="backbone")
        self.button = widgets.Button(description="Retrain", button_style="primary")
        self.output = widgets.Output()
        self.button.on_click(lambda _: self.run())
        self._backbones = {}
        self.last_evaluation = None

    def widget(self) -> widgets.Widget:
        controls = widgets.VBox([self.steps, self.learning_rate, self.batch_size, self.backbone, self.button])
        return widgets.VBox([controls, self.output])

    def _ipython_display_(self):
        display(self.widget())

    def run(self):
        """Cache bottlenecks for the chosen backbone if needed, train, evaluate, redraw."""
        name = self.backbone.value
        if name not in self._backbones:
            self._backbones[name] = backbones.load_backbone(name)
        config = train.TrainConfig(
            how_many_training_steps=self.steps.value,
            learning_rate=self.learning_rate.value,
            train_batch_size=self.batch_size.value,
            validation_batch_size=-1,
        )
        recipe = pipeline.HeadRecipe("the panel's settings", config)
        trained = pipeline.run(recipe, self.dataset, self._backbones[name], self.bottleneck_dir, progress=False)
        history = trained.history
        self.last_evaluation = trained.evaluate("test")
        with self.output:
            self.output.clear_output(wait=True)
            figure = plots.plot_history(history)
            figure.suptitle(f"{name}: test accuracy {self.last_evaluation.accuracy:.0%}", y=1.02)
            display(figure)
            plt.close(figure)
        return history, self.last_evaluation


def safe_upload_name(name: str) -> str:
    """A file name that stays inside its folder: no folders, no dots in front, safe characters only."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")
    return cleaned[:100] or "upload"


class UploadPanel:
    """Upload a photo; it is saved inside ``folder`` and labelled with the retrained model."""

    def __init__(self, graph, labels, folder, top_k: int = 5, max_bytes: int = MAX_UPLOAD_BYTES):
        self.classify = label.load_classifier(graph)
        self.class_names = label.read_labels(labels)
        self.top_k, self.max_bytes = top_k, max_bytes
        self.folder = Path(folder)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
        self.output = widgets.Output()
        self.upload.observe(self._on_change, names="value")

    def widget(self) -> widgets.Widget:
        return widgets.VBox([self.upload, self.output])

    def _ipython_display_(self):
        display(self.widget())

    def _on_change(self, change):
        for item in change["new"]:
            self.handle_upload(item["name"], bytes(item["content"]))

    def handle_upload(self, name: str, content: bytes):
        """Check, save (never over another file) and label one uploaded file; returns the ``Labelled`` result."""
        if len(content) > self.max_bytes:
            raise ValueError(f"{name}: {len(content):,} bytes is over the {self.max_bytes:,}-byte upload limit")
        try:
            with Image.open(io.BytesIO(content)) as image:
                image.verify()
        except Exception:
            raise ValueError(f"{name}: not an image; upload a JPEG, PNG, GIF, BMP or WebP photo") from None
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = Path(safe_upload_name(name))
        target, number = self.folder / safe.name, 1
        while target.exists():
            target, number = self.folder / f"{safe.stem}_{number}{safe.suffix}", number + 1
        if target.resolve().parent != self.folder.resolve():
            raise ValueError(f"{name}: refused, the name would leave the upload folder")
        with atomic_path(target) as temporary:  # a half-written upload never appears under its name
            temporary.write_bytes(content)
        try:
            image = load_image(target)
        except ImageError as error:
            target.unlink()
            raise ValueError(f"{name}: {error}") from None
        result = label.Labelled(target, label.top_k_labels(self.classify, image, self.class_names, self.top_k))
        with self.output:
            self.output.clear_output(wait=True)
            figure = plots.plot_top_k(image, result.top, title=target.name)
            display(figure)
            plt.close(figure)
        return result
