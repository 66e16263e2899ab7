"""The layout checks: a picture longer than any camera's frame or with a flat light band along an edge (a caption,
a page) is not assessed (`composite_image`), while dermoscopy, over-exposed skin included, passes."""
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import FIXTURES, MINI, SHIPPED

DERMOSCOPY = sorted((FIXTURES / "fullres").glob("*.jpg")) + sorted((FIXTURES / "modality" / "isic2017_sample").glob(
    "*.jpg")) + sorted((MINI / "images").glob("*.jpg"))[:20]


@pytest.fixture(scope="module")
def predictor(shipped_bundle):
    from dermalens.inference import Predictor
    return Predictor(shipped_bundle)


@pytest.fixture(scope="module")
def spec(shipped_bundle):
    from dermalens.preprocess import PreprocessSpec
    return PreprocessSpec.from_dict(json.loads((shipped_bundle / "card.json").read_text())["preprocessing"])


def captioned(img: Image.Image, share: float = 0.15, at_top: bool = True) -> Image.Image:
    out = img.copy()
    h = int(img.height * share)
    y0 = 0 if at_top else img.height - h
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, y0, img.width, y0 + h], fill="white")
    draw.text((6, y0 + h // 3), "Fig. 3  dermoscopy of the lesion, 10x", fill="black")
    return out


def jpeg(img: Image.Image, quality: int = 85) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_the_shipped_cards_carry_the_rules_the_code_applies():
    from dermalens.inference.layout import LAYOUT_RULES
    for name in ("dermalens", "dermalens-lite2"):
        card = json.loads((SHIPPED.parent / name / "card.json").read_text())
        assert card["ood"]["layout_rules"] == LAYOUT_RULES, name
        rows = card["ood"]["layout_figures"]["rows"]
        assert {(r["set"], r["part"]) for r in rows if r["dermoscopic"]} >= {("ham10000", "check"),
                                                                            ("isic_archive", "check")}


def test_a_picture_both_elongated_and_banded_gets_one_reason(predictor):
    img = captioned(Image.open(DERMOSCOPY[0]).convert("RGB").resize((1500, 450)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    assert [r.code for r in predictor.predict(buf.getvalue()).ood_reasons] == ["composite_image"]


def test_no_camera_frame_is_elongated_and_two_frames_side_by_side_are():
    from dermalens.inference.layout import LAYOUT_RULES, shape_reasons
    for w, h in [(600, 450), (450, 600), (1024, 1024), (1920, 1080), (2400, 1080), (7000, 3000)]:
        assert shape_reasons(w, h, LAYOUT_RULES) == [], (w, h)
    for w, h in [(1200, 450), (450, 1200), (1800, 600)]:
        reasons = shape_reasons(w, h, LAYOUT_RULES)
        assert [r.code for r in reasons] == ["composite_image"]
        assert f"{max(w, h) / min(w, h):.1f} times" in reasons[0]
    assert shape_reasons(1200, 450, None) == [] and shape_reasons(1200, 450, {}) == []  # a card from before


def test_dermoscopy_has_no_band_and_a_caption_on_any_edge_is_one(spec):
    from dermalens.inference.layout import LAYOUT_RULES, band_reasons
    assert len(DERMOSCOPY) >= 20
    for path in DERMOSCOPY:
        img = Image.open(path).convert("RGB")
        assert band_reasons(spec.to_uint8(img), LAYOUT_RULES) == [], path.name
    img = Image.open(DERMOSCOPY[0]).convert("RGB")
    for turn in (0, 90):  # a caption at the top, at the bottom, and (turned) at either side
        for at_top in (True, False):
            dressed = jpeg(captioned(img.rotate(turn, expand=True), at_top=at_top), quality=60)
            reasons = band_reasons(spec.to_uint8(dressed), LAYOUT_RULES)
            assert [r.code for r in reasons] == ["composite_image"], (turn, at_top)
    # a caption the central crop cuts away is not in the networks' view: no reason to refuse the picture
    assert band_reasons(spec.to_uint8(captioned(img, share=0.03)), LAYOUT_RULES) == []
    assert band_reasons(spec.to_uint8(captioned(img)), None) == []  # a card from before the check


def test_over_exposed_skin_that_fades_out_is_not_a_band(spec):
    """Pale skin burnt out to white at an edge is light and flat too, but it fades into the image: real dermoscopy
    of that kind passes only because the band must end in a straight line."""
    from dermalens.inference.layout import LAYOUT_RULES, band_depth
    burnt = sorted((FIXTURES / "overexposed").glob("*.jpg"))
    assert len(burnt) == 4
    without_its_end = {**LAYOUT_RULES["band"], "max_flat_after": 1.0}
    for path in burnt:
        view = spec.to_uint8(Image.open(path).convert("RGB"))
        assert band_depth(view, LAYOUT_RULES["band"]) == 0.0, path.name
        assert band_depth(view, without_its_end) >= LAYOUT_RULES["band"]["min_depth"], path.name


def test_a_captioned_figure_and_two_images_side_by_side_get_no_answer(predictor):
    img = Image.open(DERMOSCOPY[0]).convert("RGB")
    other = Image.open(DERMOSCOPY[1]).convert("RGB").resize(img.size)
    side = Image.new("RGB", (2 * img.width, img.height))
    side.paste(img, (0, 0))
    side.paste(other, (img.width, 0))
    assert predictor.predict(img).in_distribution  # the image itself is answered
    for picture in (captioned(img), side):
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=90)
        p = predictor.predict(buf.getvalue())
        assert not p.in_distribution and p.risk == "indeterminate"
        assert [r.code for r in p.ood_reasons] == ["composite_image"]
        # told by a layout check in its own words (the learned composite check would refuse some of these too)
        assert "plain band" in p.ood_reasons[0] or "times as long as it is wide" in p.ood_reasons[0]
        assert p.to_dict()["prediction"] is None


@pytest.mark.parametrize("module", ["layout_checks", "dark_margins", "blank_rule"])
def test_the_card_steps_refuse_a_missing_bundle_and_a_bad_version_by_name(module, tmp_path, capsys):
    import importlib
    main = importlib.import_module(f"dermalens.export.{module}").main
    assert main(["--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["--model", str(SHIPPED), "--version", "3.4"]) == 2
    assert "3.4" in capsys.readouterr().err
