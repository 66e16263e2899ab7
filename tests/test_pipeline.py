"""inference.pipeline: the folder pipeline gives exactly what per-image Predictor.predict gives, in order,
and reports unreadable files in place without losing the others."""
import numpy as np
import pytest

from dermalens.inference import Predictor
from dermalens.inference.pipeline import predict_stream
from dermalens.preprocess import ImageError
from conftest import FIXTURES, MINI


@pytest.mark.parametrize("tta", [False, True])
def test_pipeline_equals_per_image_predict(tiny_bundle, tmp_path, tta):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = sorted((MINI / "images").iterdir())[:9] + [broken, tmp_path / "missing.png"] + \
        sorted((FIXTURES / "fullres").iterdir())
    fast = Predictor(tiny_bundle, mode="throughput")
    one = Predictor(tiny_bundle)
    out = list(predict_stream(fast, paths, tta=tta, explain=True, batch_size=3, max_batches=2))
    assert [p for p, _ in out] == paths
    for path, got in out:
        if path.parent == tmp_path:
            assert isinstance(got, ImageError)
            continue
        want = one.predict(path, tta=tta, explain=True)
        assert np.abs(got.probabilities - want.probabilities).max() < 1e-5
        assert (got.risk, got.ood_reasons, got.source_size, got.source) == \
            (want.risk, want.ood_reasons, want.source_size, want.source)
        assert got.cam_class == want.cam_class and np.allclose(got.cam, want.cam, atol=1e-4)
