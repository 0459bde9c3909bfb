import numpy as np
import pytest
from PIL import Image

from tests.images_factory import encoded, jpeg, rgb, write
from tlcourse.backbones import REGISTRY, preprocess_images
from tlcourse.images import ImageError, draft_scale, load_image, plain_jpeg_scale


def test_formats_are_read_by_content_whatever_the_extension(tmp_path):
    for fmt in ["PNG", "WEBP", "BMP", "GIF", "JPEG", "TIFF"]:
        path = write(tmp_path / f"x_{fmt}.jpg", encoded(rgb(seed=1), fmt))
        image = load_image(path)
        assert image.shape == (30, 40, 3) and image.dtype == np.uint8, fmt


def test_rgba_is_composited_on_white_not_black(tmp_path):
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image = load_image(write(tmp_path / "a.png", encoded(transparent, "PNG")))
    assert image.min() == 255  # fully transparent red -> white background


def test_palette_greyscale_cmyk_and_16_bit_become_rgb(tmp_path):
    palette = rgb(colour=(10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    grey = Image.new("L", (5, 5), 128)
    cmyk = Image.new("CMYK", (5, 5), (0, 255, 255, 0))  # red in CMYK
    sixteen = Image.fromarray(np.full((5, 5), 65535, np.uint16))
    assert tuple(load_image(write(tmp_path / "p.gif", encoded(palette, "GIF")))[0, 0]) == (10, 200, 30)
    assert tuple(load_image(write(tmp_path / "g.png", encoded(grey, "PNG")))[0, 0]) == (128, 128, 128)
    red = load_image(write(tmp_path / "c.jpg", encoded(cmyk, "JPEG")))[2, 2]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert tuple(load_image(write(tmp_path / "s.png", encoded(sixteen, "PNG")))[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = write(tmp_path / "r.jpg", encoded(rgb(width=40, height=30, seed=2), "JPEG", exif=exif))
    assert load_image(path).shape == (40, 30, 3)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(load_image(write(tmp_path / "anim.gif", data))[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"just some text\n", "not an image"),
        (b"<html><body>404</body></html>", "not an image"),
        (jpeg(width=200, height=200)[:400], "truncated"),
    ],
)
def test_unusable_files_raise_a_clear_reason(tmp_path, data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(write(tmp_path / "bad.jpg", data))


def test_decompression_bomb_is_refused(tmp_path):
    path = write(tmp_path / "big.png", encoded(Image.new("L", (200, 200)), "PNG"))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, max_pixels=10_000)


def test_a_large_jpeg_is_decoded_smaller_by_the_decoder_and_looks_the_same_to_a_backbone(tmp_path):
    rows, cols = np.mgrid[0:1800, 0:2400]
    photo = np.stack([rows % 256, cols % 256, (rows + cols) // 20 % 256], axis=-1).astype(np.uint8)
    path = write(tmp_path / "big.jpg", encoded(Image.fromarray(photo), "JPEG", quality=95))
    drafted = load_image(path)
    assert drafted.shape == (900, 1200, 3)  # 1/2: the smallest scale whose short side is still >= 512
    with Image.open(path) as full:
        full = np.asarray(full.convert("RGB"))
    spec = REGISTRY["inception_v3"].preprocessing  # the largest input a backbone takes
    seen = [preprocess_images(image[None], spec).numpy() for image in (drafted, full)]
    assert np.abs(seen[0] - seen[1]).mean() < 0.01  # under 1.3 of 255 levels on average

    exif = Image.Exif()
    exif[0x0112] = 6
    turned = write(tmp_path / "turned.jpg", encoded(Image.fromarray(photo), "JPEG", exif=exif))
    assert load_image(turned).shape == (1200, 900, 3)
    small = write(tmp_path / "small.jpg", encoded(Image.fromarray(photo[:900, :1000]), "JPEG"))
    assert load_image(small).shape == (900, 1000, 3)  # short side under 1,024: decoded whole


# TensorFlow's JPEG decoder (the fast path of tlcourse.bottlenecks.image_pipeline) against Pillow's.
TF_PILLOW_TOLERANCE = 0  # the largest difference in any channel of any pixel: both are libjpeg-turbo, same settings


def tensorflow_decoded(path, scale):
    from tlcourse.bottlenecks import JPEG_RATIOS, _decode_plain_jpeg

    return _decode_plain_jpeg(str(path), JPEG_RATIOS.index(scale)).numpy()


def assert_same_pixels(path):
    scale = plain_jpeg_scale(path)
    assert scale, f"{path} should be a plain JPEG"
    pillow, tensorflow = load_image(path), tensorflow_decoded(path, scale)
    assert pillow.shape == tensorflow.shape, path
    difference = np.abs(pillow.astype(int) - tensorflow.astype(int)).max()
    assert difference <= TF_PILLOW_TOLERANCE, f"{path}: pixels differ by up to {difference}"


def test_plain_jpegs_are_told_apart_from_those_only_pillow_reads_right(tmp_path):
    rotated, upright = Image.Exif(), Image.Exif()
    rotated[0x0112], upright[0x0112] = 6, 1
    cases = {
        "baseline.jpg": (encoded(rgb(seed=1), "JPEG"), 1),
        "progressive.jpg": (encoded(rgb(seed=2), "JPEG", progressive=True), 1),
        "grey.jpg": (encoded(Image.new("L", (20, 10), 90), "JPEG"), 1),
        "upright.jpg": (encoded(rgb(seed=3), "JPEG", exif=upright), 1),
        "camera.jpg": (encoded(rgb(4032, 3024, colour=(9, 99, 199)), "JPEG"), 4),
        "large.jpg": (encoded(rgb(1100, 1030, colour=(9, 99, 199)), "JPEG"), 2),
        "rotated.jpg": (encoded(rgb(seed=4), "JPEG", exif=rotated), 0),
        "cmyk.jpg": (encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), 0),
        "png.jpg": (encoded(rgb(seed=5), "PNG"), 0),
        "empty.jpg": (b"", 0),
        "cut.jpg": (encoded(rgb(seed=6), "JPEG")[:10], 0),
    }
    for name, (data, scale) in cases.items():
        assert plain_jpeg_scale(write(tmp_path / name, data)) == scale, name
    assert draft_scale(4032, 3024) == 4 and draft_scale(1023, 4000) == 1 and draft_scale(8192, 8192) == 8
    for name in ("baseline.jpg", "progressive.jpg", "grey.jpg", "upright.jpg", "camera.jpg", "large.jpg"):
        assert_same_pixels(tmp_path / name)


@pytest.mark.parametrize("dataset", ["stamps", "many_classes"])
def test_tensorflow_and_pillow_decode_the_course_datasets_alike(dataset):
    import tlcourse as tlc

    files = sorted(path for path in getattr(tlc.datasets, dataset)().rglob("*") if path.is_file())
    plain = [path for path in files[:: max(1, len(files) // 150)] if plain_jpeg_scale(path)]
    assert len(plain) >= 10, f"{dataset}: expected plain JPEGs to compare"
    for path in plain:
        assert_same_pixels(path)
