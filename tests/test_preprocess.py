"""One preprocessing definition: formats, modes, orientation, and train/serve agreement."""
import io

import numpy as np
import pytest
from PIL import Image

from dermalens.data import load_ham10000
from dermalens.preprocess import (ImageError, ImageTooLarge, PreprocessSpec, UnsupportedImageType,
                                  load_rgb, upright_size)
from conftest import FIXTURES, MINI

LESION = sorted((MINI / "images").iterdir())[0]


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb():
    return Image.open(LESION).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(rgb, fmt):
    out = PreprocessSpec().to_uint8(_bytes(rgb, fmt))
    assert out.shape == (192, 256, 3) and out.dtype == np.uint8
    ref = PreprocessSpec().to_uint8(_bytes(rgb, "PNG"))
    tol = 60 if fmt in ("GIF", "JPEG", "WEBP") else 0  # lossy / palette formats
    assert np.abs(out.astype(int) - ref.astype(int)).mean() <= max(tol / 4, 0.0) + 1e-9


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_any_mode_becomes_rgb(rgb, mode):
    if mode == "I;16":
        a = (np.asarray(rgb.convert("L"), np.uint16) * 257)
        img = Image.fromarray(a)
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255.0, "F")
    else:
        img = rgb.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F") else "PNG"
    arr = np.asarray(load_rgb(_bytes(img, fmt)))
    assert arr.shape == (150, 200, 3) and arr.dtype == np.uint8
    if mode in ("L", "I;16", "F"):  # grey-level images keep their levels through the 16-bit/float scaling
        assert np.abs(arr[..., 0].astype(int) - np.asarray(rgb.convert("L"), int)).max() <= 1


def test_16bit_png_uses_the_full_range():
    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    arr = np.asarray(load_rgb(_bytes(Image.fromarray(a), "PNG")))
    assert arr.min() == 0 and arr.max() == 255



def _tiff32(values: np.ndarray, unsigned: bool, **kw) -> bytes:
    """A 32-bit greyscale TIFF: Pillow writes mode I as signed (SampleFormat 2); the unsigned kind (as cameras and
    scientific software write it) is the same file with SampleFormat 1."""
    data = _bytes(Image.fromarray(values.view(np.int32)), "TIFF", **kw)
    if unsigned:
        signed_tag = b"\x53\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # tag 339, SHORT, 1 value: 2
        assert data.count(signed_tag) == 1
        data = data.replace(signed_tag, signed_tag[:-2] + b"\x01\x00")
    return data


_RAMP = np.linspace(0, 1, 256)


@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff32_signed", "tiff32_unsigned", "tiff32_unsigned_turned"])
def test_a_grey_gradient_of_any_integer_depth_becomes_the_same_8bit_gradient(kind):
    """A 32-bit TIFF (mode I) was read as 0..65535 like a 16-bit one: clipped white, or wrapped when unsigned."""
    if kind in ("png16", "tiff16"):
        data = _bytes(Image.fromarray(np.tile(np.round(_RAMP * 65535).astype(np.uint16), (8, 1))),
                      "PNG" if kind == "png16" else "TIFF")
    elif kind == "tiff32_signed":
        data = _tiff32(np.tile(np.round(_RAMP * (2**31 - 1)).astype(np.int32), (8, 1)), unsigned=False)
    else:
        exif = Image.Exif()
        if kind.endswith("turned"):
            exif[0x0112] = 6  # the depth must be known after the EXIF turn too
        data = _tiff32(np.tile(np.round(_RAMP * (2**32 - 1)).astype(np.uint32), (8, 1)), unsigned=True, exif=exif)
    img = load_rgb(data)
    arr = np.asarray(img)
    if kind.endswith("turned"):
        assert img.size == (8, 256)
        arr = np.asarray(img.transpose(Image.Transpose.ROTATE_90))
    assert arr.shape == (8, 256, 3) and (arr == arr[..., :1]).all()
    assert np.abs(arr[0, :, 0].astype(int) - np.round(_RAMP * 255)).max() <= 1, arr[0, :, 0]


def test_a_32bit_image_of_unknown_depth_is_scaled_by_its_own_range_and_a_16bit_one_as_before():
    wide = Image.fromarray(np.tile(np.round(_RAMP * 3_000_000 - 1_000_000).astype(np.int32), (8, 1)))  # no file
    assert wide.mode == "I"
    arr = np.asarray(load_rgb(wide))[0, :, 0].astype(int)
    assert np.abs(arr - np.round(_RAMP * 255)).max() <= 1
    narrow = Image.fromarray(np.tile(np.round(_RAMP * 65535).astype(np.int32), (8, 1)))  # 16-bit levels in mode I
    arr = np.asarray(load_rgb(narrow))[0, :, 0].astype(int)
    assert np.abs(arr - np.round(_RAMP * 255)).max() <= 1
    dim = Image.fromarray(np.tile(np.arange(256, dtype=np.int32) * 100, (8, 1)))  # 0..25500: dim, as it always was
    assert np.asarray(load_rgb(dim)).max() == round(25500 / 257)


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width x height (1-bit grey) and holds almost no data: opening it costs nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("limit, size, accepted", [
    (40_000_000, (10_000, 10_000), False),  # over the limit, under Pillow's error (with its warning)
    (40_000_000, (20_000, 10_000), False),  # over Pillow's error too: said "far over the limit", no size
    (300_000_000, (15_000, 13_000), True),  # under the configured limit but over Pillow's: was refused
    (300_000_000, (20_000, 20_000), False),  # over both
])
def test_the_configured_pixel_limit_applies_and_a_refusal_says_the_size_and_the_limit(limit, size, accepted,
                                                                                     monkeypatch):
    import warnings
    from dermalens.preprocess import open_image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    w, h = size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # no warning for an image under the limit
        if accepted:
            assert open_image(png_header(w, h), max_pixels=limit).size == size
            return
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own, before the refusal
        with pytest.raises(ImageTooLarge) as e:
            open_image(png_header(w, h), max_pixels=limit)
    assert f"{w * h:,} pixels" in str(e.value) and f"limit {limit:,}" in str(e.value), str(e.value)
    assert "far over" not in str(e.value)

def _flat_jpeg(size, fmt="JPEG") -> bytes:
    return _bytes(Image.new("RGB", size, (180, 120, 100)), fmt)


@pytest.mark.parametrize("size, at_least", [((2000, 1500), 682), ((1365, 1000), 682), ((700, 5000), 341),
                                            ((6000, 4000), 682), ((600, 450), 682)])
def test_decoded_size_is_the_size_a_reduced_jpeg_decode_gives(size, at_least):
    from dermalens.preprocess import decoded_size
    img = Image.open(io.BytesIO(_flat_jpeg(size)))
    predicted = decoded_size(img, at_least)
    img.draft(None, (at_least, at_least))
    img.load()
    assert predicted == img.size and min(img.size) >= min(at_least, *size)


def test_a_big_jpeg_counts_the_pixels_it_decodes_and_pillows_warning_stays_quiet(monkeypatch):
    """A phone's 48-108 megapixel JPEG was refused as too large, though a reduced decode reads a few hundred
    thousand of its pixels; Pillow's decompression-bomb warning was printed above the answer."""
    import warnings
    from dermalens.preprocess import open_image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)  # this 3 MP JPEG is over it: Pillow warns
    jpeg, png = _flat_jpeg((2000, 1500)), _flat_jpeg((2000, 1500), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(jpeg, max_pixels=1_000_000, at_least=682).size == (2000, 1500)  # decoded at 1000x750
        assert load_rgb(jpeg, max_pixels=1_000_000, at_least=682).size == (1000, 750)
        for data, at_least in ((jpeg, None), (png, 682)):  # read whole: the limit applies to every pixel
            with pytest.raises(ImageTooLarge, match=r"2000x1500 = 3,000,000 pixels \(limit 1,000,000\)"):
                load_rgb(data, max_pixels=1_000_000, at_least=at_least)


def test_transparency_is_composited_not_dropped():
    img = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    img.paste((0, 255, 0, 255), (0, 0, 10, 10))
    arr = np.asarray(load_rgb(_bytes(img, "PNG")))
    assert tuple(arr[5, 2]) == (0, 255, 0) and tuple(arr[5, 15]) == (0, 0, 0)


def test_gif_first_frame(rgb):
    frames = [Image.new("RGB", (40, 30), c) for c in [(200, 10, 10), (10, 200, 10), (10, 10, 200)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    arr = np.asarray(load_rgb(buf.getvalue()))
    assert arr[..., 0].mean() > 150 and arr[..., 1].mean() < 60


def test_exif_orientation_is_honoured(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _bytes(rgb, "JPEG", exif=exif.tobytes(), quality=95)
    shown = load_rgb(data)
    assert shown.size == (150, 200)  # portrait after rotation
    assert upright_size(Image.open(io.BytesIO(data))) == (150, 200)  # known before the decode
    expected = np.asarray(rgb.transpose(Image.Transpose.ROTATE_270), np.int16)
    assert np.abs(np.asarray(shown, np.int16) - expected).mean() < 6


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        load_rgb(b"")
    with pytest.raises(ImageError, match="not a recognised image"):
        load_rgb(b"hello, I am text")
    with pytest.raises(ImageError, match="no such file"):
        load_rgb(tmp_path / "nope.jpg")
    truncated = LESION.read_bytes()[:2000]
    with pytest.raises(ImageError, match="cannot decode"):
        load_rgb(truncated)
    big = _bytes(Image.new("L", (5000, 5000)), "PNG")
    with pytest.raises(ImageTooLarge, match="too large"):
        load_rgb(big, max_pixels=1_000_000)
    ico = _bytes(Image.new("RGB", (32, 32)), "ICO")
    with pytest.raises(UnsupportedImageType, match="ICO images are not supported"):
        load_rgb(ico)


def test_spec_round_trips_and_validates():
    spec = PreprocessSpec(input_size=(144, 192), mean=(0.1, 0.2, 0.3), color_constancy="shades_of_gray")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="resize must be one of"):
        PreprocessSpec(resize="squash")
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        PreprocessSpec.from_dict({"input_size": [10, 10], "gamma": 2})
    for bad in (0.3, 1.2, True, "0.9", float("nan")):
        with pytest.raises(ValueError, match="center_fraction must be a number from 0.5 to 1"):
            PreprocessSpec(center_fraction=bad)
    with pytest.raises(ValueError, match="match_orientation must be true or false"):
        PreprocessSpec(match_orientation="yes")
    # A card written before the setting keeps the behaviour it was evaluated with.
    old = {k: v for k, v in PreprocessSpec(match_orientation=True).to_dict().items() if k != "match_orientation"}
    assert PreprocessSpec.from_dict(old).match_orientation is False


def test_center_fraction_keeps_the_middle_of_the_frame(rgb):
    """0.9 keeps the central 180x135 of a 200x150 frame (the same 4:3 shape), then resizes as usual;
    a lesion's pixels near the centre survive, the frame's edge does not."""
    spec = PreprocessSpec(input_size=(135, 180), center_fraction=0.9)
    assert np.array_equal(spec.to_uint8(rgb), np.asarray(rgb.crop((10, 7, 190, 142))))
    assert np.array_equal(PreprocessSpec(input_size=(150, 200)).to_uint8(rgb), np.asarray(rgb))


def test_portrait_images_are_turned_not_squeezed(rgb):
    """A lesion photographed upright (3:4) reaches a landscape input turned 90 degrees, as its
    landscape original would when turned 180 degrees (a view training shows); without the setting
    it is squeezed to 0.56 of its width. Square images and landscape ones are never turned."""
    spec = PreprocessSpec(input_size=(150, 200), match_orientation=True)
    portrait = rgb.transpose(Image.Transpose.ROTATE_90)
    assert portrait.size == (150, 200) and spec.turns(*portrait.size)
    assert np.array_equal(spec.to_uint8(portrait), np.asarray(rgb.transpose(Image.Transpose.ROTATE_180)))
    squeezed = PreprocessSpec(input_size=(150, 200)).to_uint8(portrait)
    assert np.abs(squeezed.astype(int) - np.asarray(rgb.transpose(Image.Transpose.ROTATE_180))).mean() > 4
    assert not spec.turns(200, 150) and not spec.turns(150, 150)
    assert np.array_equal(spec.to_uint8(rgb), np.asarray(rgb))
    # A portrait input size turns landscape images instead; a square one turns nothing.
    assert PreprocessSpec(input_size=(200, 150), match_orientation=True).turns(200, 150)
    assert not PreprocessSpec(input_size=(96, 96), match_orientation=True).turns(150, 200)


def test_normalized_input_range_catches_a_wrong_scale():
    """Like torchxrayvision's range tests: the network must see values in the range its
    weights expect. mean=std=0.5 maps [0, 255] onto [-1, 1]; forgetting the /255 would not."""
    spec = PreprocessSpec(mean=(0.5,) * 3, std=(0.5,) * 3)
    x = spec.preprocess(LESION)
    assert x.dtype == np.float32 and x.shape == (1, 3, 192, 256)
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    extremes = np.zeros((150, 200, 3), np.uint8)
    extremes[:, 100:] = 255
    y = spec.preprocess(Image.fromarray(extremes))
    assert y.min() == pytest.approx(-1.0) and y.max() == pytest.approx(1.0)
    wrong = (spec.to_uint8(LESION).astype(np.float32) - 0.5) / 0.5  # the classic bug
    assert wrong.max() > 1.0


@pytest.mark.parametrize("options", [{}, {"color_constancy": "shades_of_gray"}, {"gray_equalize": True},
                                     {"resize": "center_crop", "input_size": (96, 96)}, {"center_fraction": 0.9}])
def test_training_and_serving_paths_agree(options, tmp_path):
    """The training side (cache -> uint8 tensors -> torch normalisation, no augmentation) and
    the serving side (PreprocessSpec.preprocess, numpy) must give the same array."""
    torch = pytest.importorskip("torch")
    from dermalens.train.augment import normalize_batch
    from dermalens.train.cache import load_pixels
    spec = PreprocessSpec(input_size=options.get("input_size", (144, 192)), mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225),
                          **{k: v for k, v in options.items() if k != "input_size"})
    all_records = load_ham10000(MINI)
    records = all_records[:6] + all_records[-2:]
    cached = load_pixels(records, spec, cache_dir=tmp_path, workers=1)
    cached_again = load_pixels(records, spec, cache_dir=tmp_path, workers=1)  # from the disk cache
    assert np.array_equal(cached, cached_again)
    train_side = normalize_batch(torch.from_numpy(cached_again).permute(0, 3, 1, 2), spec.mean, spec.std).numpy()
    serve_side = np.concatenate([spec.preprocess(r.path) for r in records])
    assert train_side.shape == serve_side.shape
    assert np.abs(train_side - serve_side).max() < 1e-5


def test_full_resolution_images_resize_to_the_same_frame():
    spec = PreprocessSpec(input_size=(144, 192))
    for p in sorted((FIXTURES / "fullres").iterdir()):
        assert spec.to_uint8(p).shape == (144, 192, 3)


def _upscaled_jpeg(path, size=(2400, 1800), **kw) -> bytes:
    return _bytes(Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC), "JPEG", quality=92, **kw)


def test_big_jpegs_decode_reduced_to_the_same_model_input():
    """A dermoscope-sized JPEG is decoded at a reduced scale (fast), never below twice the input
    size, and the model input stays within one grey level of a full decode."""
    spec = PreprocessSpec(input_size=(144, 192))
    for p in sorted((FIXTURES / "fullres").iterdir()):
        data = _upscaled_jpeg(p)
        assert load_rgb(data, at_least=2 * 192).size == (600, 450)  # 1/4 scale: both sides >= 384
        reduced = spec.to_uint8(data).astype(np.int16)
        full = np.asarray(spec.resize_image(load_rgb(data)), np.int16)
        assert np.abs(reduced - full).max() <= 2 and np.abs(reduced - full).mean() < 0.5


def test_reduced_decode_keeps_small_frames_and_orientation(rgb):
    assert load_rgb(LESION, at_least=2 * 300).size == (200, 150)  # HAM10000 frames: untouched
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _upscaled_jpeg(LESION, size=(1600, 1200), exif=exif.tobytes())
    shown = load_rgb(data, at_least=300)
    assert shown.size == (300, 400)  # decoded at 1/4 scale (400x300), then turned to portrait
    expected = np.asarray(rgb.transpose(Image.Transpose.ROTATE_270).resize((300, 400)), np.int16)
    assert np.abs(np.asarray(shown, np.int16) - expected).mean() < 8


def test_colour_rule_turns_away_greyscale_but_not_the_least_colourful_lesion():
    """The OOD gate's colour rule on decoded pixels: the HAM10000 image with the least colour passes,
    its greyscale copy (any mode a user might send: L, 16-bit, RGB with equal channels) does not, and a
    card written before the rule existed keeps the behaviour it describes."""
    from dermalens.inference.ood import EXPOSURE_RULES, exposure_reasons
    spec = PreprocessSpec(input_size=(256, 341))
    path = FIXTURES / "least_colourful" / "ISIC_0025456.jpg"
    assert exposure_reasons(spec.to_uint8(path)) == []
    grey = Image.open(path).convert("L")
    for img in (grey, Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), grey.convert("RGB")):
        reasons = exposure_reasons(spec.to_uint8(_bytes(img, "PNG")))
        assert any("greyscale" in r for r in reasons), (img.mode, reasons)
    older_card = {k: v for k, v in EXPOSURE_RULES.items() if k != "min_chroma"}
    assert exposure_reasons(spec.to_uint8(grey), older_card) == []


def test_size_rule_counts_the_short_side_of_the_image_as_sent():
    from dermalens.inference.ood import size_reasons
    assert size_reasons(200, 150, 112) == [] and size_reasons(149, 112, 112) == []
    assert "111x300" in size_reasons(111, 300, 112)[0] and size_reasons(300, 111, 112)
    assert size_reasons(10, 10, None) == []  # a card without the rule
