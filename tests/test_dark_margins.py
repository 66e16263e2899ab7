"""A dermoscope's round field inside a black frame is read without the frame (preprocessing.trim_dark_margins):
the view, the size checks and the heat-map all go by the part that is kept, and frames filled with skin are
untouched."""
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, MINI, SHIPPED
from dermalens.preprocess import PreprocessSpec, dark_margins, trim_dark_margins

sys.path.insert(0, str(SHIPPED.parents[1] / "experiments"))
from measure_dermoscope_fields import round_field  # noqa: E402  the drawing the decision was measured with

LESION = Image.open(sorted((FIXTURES / "fullres").glob("*.jpg"))[0]).convert("RGB")


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_the_frame_around_a_round_field_is_cut_away_and_nothing_else():
    for frame in [(1920, 1080), (1080, 1920), (1600, 1200), (1200, 1200)]:
        picture = Image.open(io.BytesIO(jpeg(round_field(LESION, frame, 0.7))))
        kept, (kw, kh) = trim_dark_margins(picture.convert("RGB"))
        side = 0.7 * min(frame)
        assert abs(kept.width - side) < 0.04 * max(frame) and abs(kept.height - side) < 0.04 * max(frame), frame
        assert (kw, kh) == (kept.width / frame[0], kept.height / frame[1])
    for path in sorted((MINI / "images").glob("*.jpg")) + sorted((FIXTURES / "fullres").glob("*.jpg")):
        assert dark_margins(Image.open(path).convert("RGB")) == (0.0, 0.0, 0.0, 0.0), path.name


def test_a_dark_lesion_at_the_edge_and_a_black_picture_are_not_cut():
    arr = np.asarray(LESION).copy()
    arr[:, :60] = 12  # a dark strip a tenth of the width...
    arr[::7, :60] = 200  # ...that a few lit pixels cross on every column: not a frame
    assert dark_margins(Image.fromarray(arr)) == (0.0, 0.0, 0.0, 0.0)
    arr[::7, :60] = 12
    assert dark_margins(Image.fromarray(arr))[0] == pytest.approx(0.1, abs=0.02)  # dark all along: cut
    black = Image.new("RGB", (600, 450), (5, 5, 5))
    assert dark_margins(black) == (0.0, 0.0, 0.0, 0.0)  # nothing to keep: the exposure check speaks for it


def test_the_card_key_is_checked_and_round_trips():
    spec = PreprocessSpec(trim_dark_margins=True)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="trim_dark_margins must be true or false"):
        PreprocessSpec(trim_dark_margins="yes")
    picture = jpeg(round_field(LESION, (1920, 1080), 0.7))
    assert spec.load_view(picture)[1].trimmed
    assert not PreprocessSpec().load_view(picture)[1].trimmed  # a card without the key: read as it comes


def test_the_shipped_bundles_trim_and_answer_a_round_field(shipped_bundle):
    from dermalens.inference import Predictor
    for name in ("dermalens", "dermalens-lite2"):
        card = json.loads((SHIPPED.parent / name / "card.json").read_text())
        assert card["preprocessing"]["trim_dark_margins"] is True, name
    predictor = Predictor(shipped_bundle)
    plain = predictor.predict(LESION)
    assert plain.in_distribution
    for frame in [(1920, 1080), (1080, 1920)]:
        p = predictor.predict(jpeg(round_field(LESION, frame, 0.7)), explain=True)
        assert p.in_distribution, [r.code for r in p.ood_reasons]
        w, h = p.source_size
        assert abs(w - h) <= 0.04 * max(frame) and not p.turned  # the square field, not the frame, is what was read
        overlay = Image.open(io.BytesIO(p.overlay_png()))
        assert abs(overlay.width - overlay.height) <= 0.05 * overlay.width  # the heat-map has the field's shape


def test_a_tiny_field_in_a_big_frame_is_too_small_and_a_letterboxed_strip_elongated(shipped_bundle):
    """The size checks go by the part the view shows, and say so: the API's `image` still gives the size as sent."""
    from dermalens.inference import Predictor
    predictor = Predictor(shipped_bundle)
    p = predictor.predict(jpeg(round_field(LESION, (1000, 800), 0.13)))  # a 104 px field
    too_small = [r for r in p.ood_reasons if r.code == "too_small"]
    assert not p.in_distribution and too_small and "inside its dark frame" in too_small[0]
    strip = Image.new("RGB", (1920, 1080), (6, 6, 6))
    strip.paste(LESION.resize((1920, 760)), (0, 160))  # 2.5:1 inside black bars: what the view would read
    p = predictor.predict(jpeg(strip))
    assert [r.code for r in p.ood_reasons][:1] == ["composite_image"] and "inside this picture's dark frame" in \
        p.ood_reasons[0]


def test_the_heat_map_is_turned_back_as_the_view_was_turned_for_a_big_jpeg(shipped_bundle):
    """A round field in a phone-sized JPEG is decoded at a reduced scale and trims to a near-square part; the
    heat-map must follow the view's own turn, not one worked out again from a size rounded back to full scale."""
    from dermalens.inference import Predictor
    from dermalens.preprocess import open_image
    predictor = Predictor(shipped_bundle)
    checked = 0
    for width in range(3990, 4010, 3):
        for diameter in (0.7, 0.85):
            data = jpeg(round_field(LESION, (width, 3000), diameter))
            part = predictor.bundle.spec.load_view(open_image(data))[1]
            p = predictor.predict(data)
            assert p.turned == part.turned, (width, diameter)
            assert (p.source_size[0] > p.source_size[1]) == (part.width > part.height) or part.width == part.height
            checked += part.trimmed
    assert checked >= 10
