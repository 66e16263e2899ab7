"""Image files a user can get wrong, or that are unusual, through every surface that reads images:
the shared loader, `dermalens predict` and the REST API. Each must give one clear error for that file
(or a sensible answer), and never cost the other images of the same run or batch."""
import base64
import io
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES
from dermalens.preprocess import ImageError, PreprocessSpec, open_image

LESION = FIXTURES / "fullres" / "ISIC_0024311.jpg"
HEIC = FIXTURES / "heic" / "ISIC_0024311.heic"  # the same picture as an iPhone saves it


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_with_short_header() -> bytes:
    """A PNG whose IHDR chunk is 4 bytes instead of 13: Pillow's PNG reader raises ValueError on it."""
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 4) + b"IHDR" + b"\0\0\0\x10" + b"\0\0\0\0"


def tiff_with_a_broken_second_page() -> bytes:
    """A two-page TIFF whose second page lost its width and height tags: Pillow raises TypeError when
    it counts the pages."""
    pages = [Image.new("RGB", (40, 30), (200, 100, 90)), Image.new("RGB", (40, 30), (0, 255, 0))]
    b = bytearray(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    first = struct.unpack("<I", b[4:8])[0]
    n = struct.unpack("<H", b[first:first + 2])[0]
    second = struct.unpack("<I", b[first + 2 + 12 * n:first + 6 + 12 * n])[0]
    for k in range(struct.unpack("<H", b[second:second + 2])[0]):
        entry = second + 2 + 12 * k
        if struct.unpack("<H", b[entry:entry + 2])[0] in (256, 257):  # ImageWidth, ImageLength
            b[entry:entry + 2] = struct.pack("<H", 0xFFF0 + k)
    return bytes(b)


CORRUPT = {"png with a short header": png_with_short_header}


def test_a_tiff_whose_second_page_is_damaged_is_read_from_its_first_page(tmp_path):
    (tmp_path / "two_pages.tif").write_bytes(tiff_with_a_broken_second_page())
    for source in (tiff_with_a_broken_second_page(), tmp_path / "two_pages.tif"):
        assert (PreprocessSpec(input_size=(30, 40)).to_uint8(source)[0, 0] == (200, 100, 90)).all()


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_damaged_file_is_an_image_error_not_a_crash(name, tmp_path):
    data = CORRUPT[name]()
    for source in (data, tmp_path / "damaged.img"):
        (tmp_path / "damaged.img").write_bytes(data)
        with pytest.raises(ImageError) as e:
            PreprocessSpec().to_uint8(source)
        assert "\n" not in str(e.value)


def test_a_file_name_too_long_for_the_system_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="name too long"):
        open_image(tmp_path / ("a" * 300 + ".jpg"))


def test_predict_reports_damaged_files_and_still_predicts_the_others(shipped_bundle, tmp_path, capsys):
    from dermalens.cli import main
    (tmp_path / "bad.png").write_bytes(png_with_short_header())
    too_long = str(tmp_path / ("b" * 300 + ".jpg"))
    out = tmp_path / "out.json"
    rc = main(["predict", str(LESION), str(tmp_path / "bad.png"), too_long,
               "--model", str(shipped_bundle), "--json", str(out)])
    import json
    body = json.loads(out.read_text())
    assert rc == 1
    assert [r["file"] for r in body["results"]] == [str(LESION)]
    assert sorted(e["file"] for e in body["errors"]) == sorted([str(tmp_path / "bad.png"), too_long])


@pytest.fixture(scope="module")
def client(shipped_bundle):
    from fastapi.testclient import TestClient
    from dermalens.serve.app import create_app
    from dermalens.serve.settings import Settings
    with TestClient(create_app(Settings(model=str(shipped_bundle)))) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("name", list(CORRUPT))
def test_the_api_answers_a_damaged_file_with_400_and_keeps_the_rest_of_a_batch(client, name):
    bad = b64(CORRUPT[name]())
    r = client.post("/predict", json={"image": bad})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text
    r = client.post("/predict/batch", json={"images": [b64(LESION.read_bytes()), bad]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["success"] is True and first["prediction"]["code"]
    assert second == {"success": False, "index": 1, "error": second["error"]} and second["error"]["code"] == "invalid_image"


def test_a_file_name_that_is_not_utf8_keeps_its_row_in_the_table_and_the_csv(shipped_bundle, tmp_path, capsys):
    import os
    from dermalens.cli import main
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name, as old archives unpack them
    odd.write_bytes(LESION.read_bytes())
    out = tmp_path / "out.csv"
    rc = main(["predict", str(odd), "--model", str(shipped_bundle), "--csv", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert b"caf\xe9.jpg" in out.read_bytes()  # the name as it is on disk, so the row finds its file
    assert "caf\ufffd.jpg" in capsys.readouterr().out


DAMAGED_HEIC = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + b"\0" * 64  # a header, no image
OTHER_KINDS = {  # what people send by mistake that Pillow cannot read: the message names it
    "PDF": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
    "SVG": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n',
}


@pytest.mark.parametrize("kind", list(OTHER_KINDS))
def test_a_pdf_or_svg_is_named_as_unsupported_with_the_types_that_are(kind, client, tmp_path):
    from dermalens.preprocess import UnsupportedImageType
    f = tmp_path / "photo.jpg"  # renamed: the name says nothing
    f.write_bytes(OTHER_KINDS[kind])
    with pytest.raises(UnsupportedImageType, match=f"{kind}.*JPEG, PNG"):
        open_image(f)
    r = client.post("/predict", json={"image": b64(OTHER_KINDS[kind])})
    assert r.status_code == 415 and kind in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("declared", ["image/x-png", "image/x-citrix-png"])
def test_a_png_declared_under_another_image_type_name_is_read_by_its_bytes(client, declared):
    # old browsers say image/x-png, Citrix desktops (common in clinics) image/x-citrix-png: the bytes decide
    png = encode(Image.open(LESION).convert("RGB"), "PNG")
    r = client.post("/predict", json={"image": f"data:{declared};base64," + b64(png)})
    assert r.status_code == 200 and r.json()["image"]["format"] == "PNG", r.text
    r = client.post("/predict/upload", files={"file": ("lesion.png", png, declared)})
    assert r.status_code == 200, r.text


def test_a_declared_type_that_is_no_image_is_still_refused_with_415(client):
    png = encode(Image.new("RGB", (8, 8)), "PNG")
    assert client.post("/predict", json={"image": "data:text/plain;base64," + b64(png)}).status_code == 415
    assert client.post("/predict/upload", files={"file": ("a.txt", png, "text/plain")}).status_code == 415


def test_a_folder_says_which_image_files_it_left_out_by_type(tmp_path):
    from dermalens.predict import expand_inputs
    (tmp_path / "lesion.jpg").write_bytes(LESION.read_bytes())
    (tmp_path / "IMG_0001.HEIC").write_bytes(HEIC.read_bytes())  # an iPhone's photos: read
    (tmp_path / "IMG_0002.dng").write_bytes(b"II*\0")  # a camera's raw file, not read: said
    (tmp_path / "saved.jfif").write_bytes(LESION.read_bytes())  # a JPEG as some browsers save it: read
    (tmp_path / "notes.txt").write_text("not an image, not worth a word")
    paths, problems = expand_inputs([str(tmp_path)])
    assert paths == [tmp_path / "IMG_0001.HEIC", tmp_path / "lesion.jpg", tmp_path / "saved.jfif"]
    assert len(problems) == 1 and ".dng" in problems[0] and ".heic" not in problems[0] and ".txt" not in problems[0]


def test_an_avif_photo_is_read_as_its_jpeg_is(client, shipped_bundle):
    """AVIF (some phones and most web pages save it) was left out of folders and refused by name."""
    from dermalens.inference import Predictor
    from dermalens.predict import expand_inputs
    predictor = Predictor(shipped_bundle)
    avif = encode(Image.open(LESION).convert("RGB"), "AVIF", quality=80)
    a, j = predictor.predict(avif), predictor.predict(LESION)
    assert a.in_distribution and a.top == j.top and np.abs(np.asarray(a.probabilities) - j.probabilities).max() < 0.05
    r = client.post("/predict", json={"image": "data:image/avif;base64," + b64(avif)})
    assert r.status_code == 200 and r.json()["image"]["format"] == "AVIF", r.text
    assert "AVIF" in client.post("/predict", json={"image": b64(b"%PDF-1.4\n")}).json()["error"]["message"]


def test_an_iphones_heic_photo_is_read_as_its_jpeg_is(client, shipped_bundle):
    """HEIC, an iPhone camera's format, was refused by name; the same picture as JPEG was answered."""
    from dermalens.inference import Predictor
    predictor = Predictor(shipped_bundle)
    heic, jpeg = predictor.predict(HEIC), predictor.predict(FIXTURES / "fullres" / HEIC.with_suffix(".jpg").name)
    assert heic.in_distribution and jpeg.in_distribution
    assert heic.top == jpeg.top and np.abs(np.asarray(heic.probabilities) - jpeg.probabilities).max() < 0.05
    photo = predictor.predict(FIXTURES / "heic" / "PAT_38_54_234.heic")  # a phone photo sent as the phone saved it
    assert not photo.in_distribution and "not_dermoscopic" in [r.code for r in photo.ood_reasons]
    r = client.post("/predict", json={"image": "data:image/heic;base64," + b64(HEIC.read_bytes())})
    assert r.status_code == 200 and r.json()["image"] == {"width": 600, "height": 450, "format": "HEIF"}, r.text
    r = client.post("/predict/upload", files={"file": ("IMG_0001.HEIC", HEIC.read_bytes(), "image/heic")})
    assert r.status_code == 200, r.text


def test_a_heic_first_met_by_several_threads_at_once_is_read_by_each(monkeypatch):
    """Pillow learns HEIC at the first one met: a thread that failed before another taught it read a good photo as
    damaged."""
    import threading

    import dermalens.preprocess as pre
    Image.init()  # every other plugin registered first: registered while the copies below stand, it would be lost
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})  # not yet known
    monkeypatch.setattr(Image, "ID", [k for k in Image.ID if k != "HEIF"])
    slow = threading.Event()
    other_kind = pre._other_kind

    def late(fp):  # the first thread looks at the header only after the second has taught Pillow HEIC
        if threading.current_thread().name == "first":
            slow.wait(5)
        return other_kind(fp)
    monkeypatch.setattr(pre, "_other_kind", late)
    sizes = {}

    def read(name):
        sizes[name] = open_image(HEIC.read_bytes()).size
        slow.set()
    threads = [threading.Thread(target=read, args=(n,), name=n) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sizes == {"first": (600, 450), "second": (600, 450)}


def test_a_progressive_jpeg_counts_every_pixel_a_baseline_one_its_reduced_decode():
    """libjpeg holds every coefficient of a progressive JPEG whatever the scale it decodes at."""
    from dermalens.preprocess import ImageTooLarge, load_rgb
    img = Image.new("RGB", (2000, 1500), (180, 120, 100))
    assert load_rgb(encode(img, "JPEG"), max_pixels=1_000_000, at_least=682).size == (1000, 750)
    with pytest.raises(ImageTooLarge):
        open_image(encode(img, "JPEG", progressive=True), max_pixels=1_000_000, at_least=682)


def test_a_heic_holding_several_images_is_read_at_its_primary_one():
    """A HEIC opens at its primary image, which need not be the first: the first was decoded (a blue frame here),
    past the size the pixel limit had checked."""
    from dermalens.preprocess import load_rgb
    path = FIXTURES / "heic" / "two_images_primary_second.heic"
    img = load_rgb(path, max_pixels=100_000)  # the first image is 160x120 blue, the primary the 300x225 lesion
    r, g, b = np.asarray(img, float).mean(axis=(0, 1))
    assert img.size == (300, 225) and r > b


def test_a_damaged_heic_says_it_cannot_be_read(client):
    with pytest.raises(ImageError, match="cannot read this HEIC/HEIF image"):
        open_image(DAMAGED_HEIC)
    r = client.post("/predict", json={"image": b64(DAMAGED_HEIC)})
    assert r.status_code == 400 and "HEIC" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("image", ["https://example.org/lesion.jpg", "C:\\photos\\lesion.JPG", "lesion 1.jpeg", "a.png"])
def test_a_url_or_file_name_in_the_image_field_is_told_to_send_the_bytes(client, image):
    r = client.post("/predict", json={"image": image})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_base64"
    assert "base64" in r.json()["error"]["message"] and "not the" in r.json()["error"]["message"], r.text


def test_an_unexpected_failure_on_one_batch_image_keeps_the_others(client, monkeypatch):
    """Anything but the API's own errors used to turn the whole batch into a 500."""
    engine = client.app.state.engine
    infer = engine.infer
    odd = encode(Image.open(LESION).convert("RGB"), "PNG")

    def failing_on_the_png(data, *args, **kwargs):
        if data == odd:
            raise RuntimeError("a bug met by this image only")
        return infer(data, *args, **kwargs)
    monkeypatch.setattr(engine, "infer", failing_on_the_png)
    r = client.post("/predict/batch", json={"images": [b64(LESION.read_bytes()), b64(odd)]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["success"] is True and second["error"]["code"] == "internal_error" and second["index"] == 1


def damaged_avif() -> bytes:
    """An AVIF whose second half is zeros: Pillow's AVIF reader opens it and raises RuntimeError when it decodes."""
    data = encode(Image.open(LESION).convert("RGB"), "AVIF", quality=80)
    return data[:len(data) // 2] + bytes(len(data) - len(data) // 2)


def test_a_damaged_avif_is_an_image_error_and_costs_no_other_image(client, shipped_bundle, tmp_path, capsys):
    """Its RuntimeError stopped a whole `dermalens predict` run (no table, no CSV, no JSON) and was a 500 in the API."""
    import json
    from dermalens.cli import main
    with pytest.raises(ImageError, match="cannot decode image"):
        PreprocessSpec().to_uint8(damaged_avif())
    (tmp_path / "damaged.avif").write_bytes(damaged_avif())
    out = tmp_path / "out.json"
    assert main(["predict", str(tmp_path / "damaged.avif"), str(LESION), "--model", str(shipped_bundle),
                 "--json", str(out)]) == 1
    body = json.loads(out.read_text())
    assert [r["file"] for r in body["results"]] == [str(LESION)] and len(body["errors"]) == 1
    r = client.post("/predict", json={"image": b64(damaged_avif())})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text


def test_a_cut_off_avif_says_it_cannot_be_read_as_avif():
    data = encode(Image.open(LESION).convert("RGB"), "AVIF", quality=80)
    with pytest.raises(ImageError, match="cannot read this AVIF image"):
        open_image(data[:len(data) // 2])


def test_a_jpeg_beyond_pillows_open_limit_is_still_read_at_reduced_scale(monkeypatch):
    """A 200 MP camera's baseline JPEG was refused when Pillow opened it (over twice Image.MAX_IMAGE_PIXELS), before
    the reduced-scale rule could apply; other files over that limit stay refused, a JPEG with its sides named."""
    from dermalens.preprocess import ImageTooLarge, load_rgb
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # refused when opened above 2 M, as 179 M is above 358 M
    img = Image.new("RGB", (2000, 1500), (180, 120, 100))
    assert load_rgb(encode(img, "JPEG"), max_pixels=1_000_000, at_least=682).size == (1000, 750)
    with pytest.raises(ImageTooLarge, match="2000x1500"):
        open_image(encode(img, "JPEG", progressive=True), max_pixels=1_000_000, at_least=682)
    with pytest.raises(ImageTooLarge):
        open_image(encode(img, "PNG"), max_pixels=1_000_000, at_least=682)
