"""Data URLs as tools write them: optional whitespace around ';' and ',' in the header (data:image/jpeg; base64,...)."""
import base64

import pytest
from fastapi.testclient import TestClient

from conftest import FIXTURES
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

B64 = base64.b64encode((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes()).decode()


@pytest.fixture(scope="module")
def client(shipped_bundle):
    with TestClient(create_app(Settings(model=str(shipped_bundle)))) as c:
        yield c


@pytest.mark.parametrize("header", [
    "data:image/jpeg;base64,",
    "data:image/jpeg; base64,",  # was refused as a malformed data URL
    "data:image/jpeg ;base64,",
    "data:image/jpeg;base64 ,",
    "data:image/jpeg ; base64 , ",
    "data: image/jpeg;base64,",
    "data:image/jpeg; name=lesion.jpg; base64,",
    "data:image/jpeg;name = lesion.jpg;base64,",
    "DATA:IMAGE/JPEG; BASE64,",
])
def test_whitespace_in_a_data_url_header_is_accepted(client, header):
    r = client.post("/predict", json={"image": header + B64})
    assert r.status_code == 200 and r.json()["image"]["format"] == "JPEG", (header, r.text[:300])


def test_whitespace_in_a_data_url_header_is_accepted_in_a_batch(client):
    r = client.post("/predict/batch", json={"images": ["data:image/jpeg; base64," + B64, B64]})
    assert r.status_code == 200 and [x["success"] for x in r.json()["results"]] == [True, True], r.text[:300]


@pytest.mark.parametrize("header, status, code", [
    ("data:image/jpeg,", 400, "invalid_base64"),  # not base64: still refused
    ("data:image/jpeg; charset=utf-8 ,", 400, "invalid_base64"),
    ("data:text/plain; base64,", 415, "unsupported_media_type"),
    ("data:image/jpeg; base64 x,", 400, "invalid_data_url"),
])
def test_a_data_url_that_is_not_base64_or_not_an_image_is_still_refused(client, header, status, code):
    r = client.post("/predict", json={"image": header + B64})
    assert r.status_code == status and r.json()["error"]["code"] == code, (header, r.text[:300])
