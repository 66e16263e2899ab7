"""The server under concurrent load: every response is the image's own prediction, and a full queue
answers 503 'overloaded' at once (with Retry-After) instead of making requests wait."""
import base64
import concurrent.futures as cf

import httpx
import numpy as np
import pytest

from dermalens.inference import Predictor
from conftest import FIXTURES, MINI
from serverutil import running_server

IMAGES = sorted((MINI / "images").iterdir())[:12] + sorted((FIXTURES / "fullres").iterdir())


def post_all(url, paths, workers=16):
    def one(path):
        with httpx.Client(timeout=120) as c:
            return path, c.post(url + "/predict", json={"image": base64.b64encode(path.read_bytes()).decode()})
    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


def test_concurrent_requests_get_their_own_results(tiny_bundle):
    want = {p: Predictor(tiny_bundle).predict(p).probabilities for p in IMAGES}
    with running_server(tiny_bundle) as url:
        info = httpx.get(url + "/health").json()["runtime"]
        assert info["runtime"] in ("openvino", "onnxruntime") and info["precision"] in ("fp32", "bf16")
        assert httpx.get(url + "/model").json()["runtime"] == info
        results = post_all(url, IMAGES * 4)
    for path, r in results:
        assert r.status_code == 200, r.text
        got = np.array(r.json()["prediction"]["all_probabilities"])
        assert np.abs(got - want[path]).max() < 1e-4


@pytest.mark.parametrize("limit", [1])
def test_overload_is_a_clear_503(tiny_bundle, limit):
    with running_server(tiny_bundle, env_extra={"DERMALENS_MAX_QUEUE": str(limit)}) as url:
        results = post_all(url, IMAGES * 3, workers=24)
        statuses = [r.status_code for _, r in results]
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        refused = next(r for _, r in results if r.status_code == 503)
        assert refused.json()["success"] is False and refused.json()["error"]["code"] == "overloaded"
        assert "busy" in refused.json()["error"]["message"] and refused.headers["retry-after"] == "1"
        # once the burst is over, the server answers normally again
        assert post_all(url, IMAGES[:2], workers=1)[0][1].status_code == 200
