"""The REST API on a real server on loopback: responses, a bad-input corpus, limits, auth, fuzz."""
import base64
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import MINI
from serverutil import running_server

LESION = sorted((MINI / "images").iterdir())[0]
CLASS_CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture(scope="module")
def api(tiny_bundle):
    with running_server(tiny_bundle) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width=20000, height=20000) -> bytes:
    """A PNG whose header promises width x height pixels; the body is tiny (never decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def test_health(api):
    r = api.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["model_loaded"] is True
    assert body["model"] == {"name": "tiny-test-model", "version": "0.0.1"}


@pytest.mark.parametrize("as_data_url", [False, True])
def test_predict_serves_both_client_styles(api, as_data_url):
    raw = LESION.read_bytes()
    image = ("data:image/jpeg;base64," if as_data_url else "") + b64(raw)
    r = api.post("/predict", json={"image": image, "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    preds = body["predictions"]
    assert [p["prob"] for p in preds] == sorted((p["prob"] for p in preds), reverse=True)
    assert sorted(p["code"] for p in preds) == CLASS_CODES
    assert sum(p["prob"] for p in preds) == pytest.approx(1, abs=1e-4)
    assert body["success"] is True
    pred = body["prediction"]
    assert len(pred["all_probabilities"]) == 7
    assert pred["predicted_class"] == preds[0]["label"] and pred["confidence"] == preds[0]["prob"]
    for p in preds:
        assert pred["all_probabilities"][CLASS_CODES.index(p["code"])] == p["prob"]
    assert set(body["malignancy"]) == {"probability", "label", "threshold"}
    assert body["risk"]["level"] in {"low", "moderate", "high", "indeterminate"} and body["risk"]["recommendation"]
    assert "in_distribution" in body["quality"] and "score" in body["quality"]
    assert body["explanation"]["overlay"].startswith("data:image/png;base64,")
    assert "not a medical device" in body["disclaimer"]
    assert body["model"]["name"] == "tiny-test-model"


def test_big_jpeg_reports_its_own_size_and_the_same_prediction(api):
    """A dermoscope-sized JPEG is decoded at reduced scale for speed; the response still names the
    uploaded size, and the prediction matches that of the same picture sent small."""
    img = Image.open(LESION).convert("RGB")
    big = encode(img.resize((3200, 2400), Image.Resampling.BICUBIC), "JPEG", quality=95)
    small = encode(img.resize((400, 300), Image.Resampling.BICUBIC), "JPEG", quality=95)
    r_big, r_small = (api.post("/predict", json={"image": b64(d)}) for d in (big, small))
    assert r_big.status_code == 200, r_big.text
    assert r_big.json()["image"] == {"width": 3200, "height": 2400, "format": "JPEG"}
    p_big, p_small = (r.json()["prediction"]["all_probabilities"] for r in (r_big, r_small))
    assert np.abs(np.array(p_big) - np.array(p_small)).max() < 0.05


def test_a_photo_taken_upright_is_turned_not_squeezed(api):
    """A phone stores an upright photo as landscape pixels plus an EXIF tag. The API reports the size
    as displayed, the network gets it turned to landscape (the same pixels as a file saved upright),
    and the heat-map comes back upright, with the photo's own shape."""
    tagged = _exif_rotated()  # 200x150 stored, "rotate 90 clockwise to display"
    upright = encode(_rgb().transpose(Image.Transpose.ROTATE_270), "PNG")  # 150x200 stored
    bodies = [api.post("/predict", json={"image": b64(d), "explain": True}).json() for d in (tagged, upright)]
    assert [b["image"]["width"] for b in bodies] == [150, 150]
    assert [b["image"]["height"] for b in bodies] == [200, 200]
    p_tagged, p_upright = (np.array(b["prediction"]["all_probabilities"]) for b in bodies)
    assert np.abs(p_tagged - p_upright).max() < 0.05  # JPEG vs PNG of the same picture
    for b in bodies:
        overlay = Image.open(io.BytesIO(base64.b64decode(b["explanation"]["overlay"].split(",", 1)[1])))
        assert overlay.size == (48, 64)  # width x height: upright (tiny model, input 48x64)


def test_too_small_and_greyscale_images_are_answered_but_not_assessed(api):
    """A thumbnail and a greyscale copy of a lesion the gate passes: 200 with the reason, no risk
    level, and the size is the one sent (an upload and a batch go the same way)."""
    assert api.post("/predict", json={"image": b64(LESION.read_bytes())}).json()["quality"]["reasons"] == []
    cases = {"thumbnail": (encode(_rgb().resize((100, 75)), "PNG"), "100x75 pixels"),
             "greyscale": (encode(_rgb().convert("L"), "PNG"), "greyscale")}
    for name, (data, reason) in cases.items():
        for r in (api.post("/predict", json={"image": b64(data)}).json(),
                  api.post("/predict/upload", files={"file": ("x.png", data, "image/png")}).json(),
                  api.post("/predict/batch", json={"images": [b64(data)]}).json()["results"][0]):
            assert r["success"] and r["quality"]["in_distribution"] is False, name
            assert r["risk"]["level"] == "indeterminate", name
            # no diagnosis at all for an image that is not assessed
            assert r["prediction"] is None and r["predictions"] == [] and r["malignancy"] is None, name
            assert any(reason in x["message"] for x in r["quality"]["reasons"]), (name, r["quality"]["reasons"])
            assert {x["code"] for x in r["quality"]["reasons"]} & {"too_small", "greyscale"}, name


def test_upload_and_batch(api):
    r = api.post("/predict/upload", files={"file": ("x.jpg", LESION.read_bytes(), "image/jpeg")},
                 data={"tta": "true"})
    assert r.status_code == 200 and r.json()["tta"] is True
    good = b64(LESION.read_bytes())
    r = api.post("/predict/batch", json={"images": [good, "not base64!!", good]})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["success"] for x in res] == [True, False, True]
    assert res[1]["error"]["code"] == "invalid_base64" and res[1]["index"] == 1
    assert api.post("/predict/batch", json={"images": [good] * 17}).status_code == 413
    assert api.post("/predict/batch", json={"images": []}).status_code == 422


def _rgb():
    return Image.open(LESION).convert("RGB")


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(_rgb(), "JPEG", exif=exif.tobytes())


def _animated_gif():
    frames = [Image.new("RGB", (60, 40), c) for c in [(200, 20, 20), (20, 200, 20)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


JSON_CASES = {  # name: (request kwargs, expected status)
    "empty body": (dict(content=b"", headers={"content-type": "application/json"}), 422),
    "not json": (dict(content=b"hello there", headers={"content-type": "application/json"}), 422),
    "json but a list": (dict(json=[1, 2, 3]), 422),
    "wrong field": (dict(json={"img": "abc"}), 422),
    "extra field": (dict(json={"image": "abc", "colour": 1}), 422),
    "image not a string": (dict(json={"image": 12345}), 422),
    "empty string": (dict(json={"image": ""}), 400),
    "invalid base64": (dict(json={"image": "%%%not*base64%%%"}), 400),
    "malformed data url": (dict(json={"image": "data:image/png,notbase64"}), 400),
    "unsupported data url type": (dict(json={"image": "data:application/pdf;base64," + b64(b"%PDF-1.4")}), 415),
    "truncated jpeg": (dict(json={"image": b64(LESION.read_bytes()[:1500])}), 400),
    "zero bytes": (dict(json={"image": b64(b"")}), 400),
    "text as image": (dict(json={"image": b64(b"just some text, not a picture\n" * 10)}), 400),
    "png bomb 20000x20000": (dict(json={"image": b64(png_bomb())}), 413),
    "ico image": (dict(json={"image": b64(encode(Image.new("RGB", (32, 32)), "ICO"))}), 415),
    "huge payload": (dict(json={"image": "A" * (16 * 1024 * 1024)}), 413),
    "1x1 image": (dict(json={"image": b64(encode(Image.new("RGB", (1, 1), (120, 80, 60)), "PNG"))}), 200),
    "16-bit png": (dict(json={"image": b64(encode(Image.fromarray(
        (np.asarray(_rgb().convert("L"), np.uint16) * 257)), "PNG"))}), 200),
    "cmyk jpeg": (dict(json={"image": b64(encode(_rgb().convert("CMYK"), "JPEG"))}), 200),
    "animated gif": (dict(json={"image": b64(_animated_gif())}), 200),
    "rgba png": (dict(json={"image": b64(encode(_rgb().convert("RGBA"), "PNG"))}), 200),
    "palette png": (dict(json={"image": b64(encode(_rgb().convert("P"), "PNG"))}), 200),
    "exif-rotated jpeg": (dict(json={"image": b64(_exif_rotated())}), 200),
    "tiff": (dict(json={"image": b64(encode(_rgb(), "TIFF"))}), 200),
    "webp": (dict(json={"image": b64(encode(_rgb(), "WEBP"))}), 200),
    "url-safe base64 with newlines": (dict(json={"image": base64.encodebytes(LESION.read_bytes()).decode()}), 200),
}


@pytest.mark.parametrize("name", list(JSON_CASES))
def test_bad_input_corpus(api, name):
    kwargs, expected = JSON_CASES[name]
    r = api.post("/predict", **kwargs)
    assert r.status_code == expected, (name, r.text[:300])
    body = r.json()
    if expected == 200:
        assert body["success"] is True
        if body["quality"]["in_distribution"]:
            assert len(body["prediction"]["all_probabilities"]) == 7
        else:  # answered, not assessed (a 1x1 or greyscale image): the reasons, no diagnosis
            assert body["quality"]["reasons"] and body["prediction"] is None
    else:
        assert body["success"] is False and body["error"]["code"] and body["error"]["message"]
        assert "Traceback" not in r.text
    assert api.get("/health").json()["status"] == "healthy"


UPLOAD_CASES = {
    "zero-byte upload": (("empty.jpg", b"", "image/jpeg"), 400),
    "text renamed .jpg": (("notes.jpg", b"dear diary\n" * 20, "image/jpeg"), 400),
    "text/plain upload": (("notes.txt", b"dear diary", "text/plain"), 415),
    "pdf upload": (("doc.pdf", b"%PDF-1.4 ...", "application/pdf"), 415),
    "png upload": (("ok.png", encode(_rgb(), "PNG"), "image/png"), 200),
}


@pytest.mark.parametrize("name", list(UPLOAD_CASES))
def test_bad_upload_corpus(api, name):
    file, expected = UPLOAD_CASES[name]
    r = api.post("/predict/upload", files={"file": file})
    assert r.status_code == expected, (name, r.text[:300])
    assert api.get("/health").json()["status"] == "healthy"


def test_upload_without_file_is_422(api):
    assert api.post("/predict/upload", data={"tta": "true"}).status_code == 422


def test_wrong_method_and_path(api):
    r = api.get("/predict")
    assert r.status_code == 405 and r.json()["success"] is False
    assert api.get("/nope").status_code == 404


def test_ui_and_docs_are_served(api):
    page = api.get("/")
    assert page.status_code == 200 and "Not a medical device" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # no external CDN
    assert api.get("/static/app.js").status_code == 200
    assert api.get("/openapi.json").json()["paths"]["/predict"]["post"]


def test_api_key_and_limits(tiny_bundle, tmp_path):
    env = {"DERMALENS_API_KEY": "s3cret", "DERMALENS_MAX_SIDE": "100", "DERMALENS_UPLOAD_DIR": str(tmp_path / "up")}
    with running_server(tiny_bundle, env) as url:
        img = {"image": b64(LESION.read_bytes())}
        assert httpx.post(url + "/predict", json=img).status_code == 401
        assert httpx.post(url + "/predict", json=img, headers={"X-API-Key": "wrong"}).status_code == 401
        # without the key, a bad body is not looked at: 401, not 422
        r = httpx.post(url + "/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert httpx.post(url + "/predict/upload", files={"file": ("a.jpg", LESION.read_bytes())}).status_code == 401
        assert httpx.get(url + "/health").status_code == 200  # health stays open
        r = httpx.post(url + "/predict", json=img, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 413 and "longest side" in r.json()["error"]["message"]  # 200x150 > 100
        small = {"image": b64(encode(_rgb().resize((80, 60)), "PNG"))}
        assert httpx.post(url + "/predict", json=small, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert len(list((tmp_path / "up").iterdir())) == 1  # saved only because the folder was configured


def test_no_upload_is_written_by_default(api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert api.post("/predict", json={"image": b64(LESION.read_bytes())}).status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_missing_model_is_reported_not_crashed(tmp_path):
    with running_server(tmp_path / "no-such-bundle") as url:
        r = httpx.get(url + "/health")
        h = r.json()
        assert r.status_code == 503 and h["status"] == "degraded"  # up, but no traffic should be sent to it
        assert h["model_loaded"] is False and "not found" in h["error"]
        r = httpx.post(url + "/predict", json={"image": b64(LESION.read_bytes())})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"


@pytest.mark.slow
def test_schema_fuzz_finds_no_server_error(api):
    """schemathesis against the live /openapi.json: no 5xx for any generated request."""
    url = str(api.base_url)
    rc = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
                         "--checks", "not_a_server_error", "--max-examples", "40", "--seed", "1",
                         "--phases", "examples,coverage,fuzzing", "--request-timeout", "30"],
                        capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stdout[-4000:] + rc.stderr[-2000:]
    assert "Tested: 5" in rc.stdout and " passed" in rc.stdout, rc.stdout[-2000:]


def test_model_says_how_large_an_image_the_server_takes_and_that_size_fits(tiny_bundle):
    """/model's limits.max_image_bytes (what the web page checks before sending) is an image file that a /predict
    JSON body carries under DERMALENS_MAX_BODY_BYTES; a larger request gets a 413 that says the limit in MB."""
    with running_server(tiny_bundle, {"DERMALENS_MAX_BODY_BYTES": "200000"}) as url:
        limits = httpx.get(url + "/model").json()["limits"]
        assert limits["max_body_bytes"] == 200000 and limits["max_pixels"] > 0 and limits["timeout_s"] > 0
        image = LESION.read_bytes()
        image += b"\0" * (limits["max_image_bytes"] - len(image))  # bytes after the JPEG's end are not read
        r = httpx.post(url + "/predict", json={"image": "data:image/jpeg;base64," + b64(image)}, timeout=60)
        assert r.status_code == 200 and r.json()["success"] is True
        r = httpx.post(url + "/predict", json={"image": b64(image + b"\0" * 2000)})
        message = r.json()["error"]["message"]
        assert r.status_code == 413 and "0.2 MB" in message and "DERMALENS_MAX_BODY_BYTES" in message
        assert "base64" in message
        r = httpx.post(url + "/predict/upload", files={"file": ("big.jpg", image + b"\0" * 60000, "image/jpeg")})
        message = r.json()["error"]["message"]  # an upload is not base64: its file may be nearly the whole limit
        assert r.status_code == 413 and "base64" not in message and "image file of at most 0.2 MB" in message, message


def test_a_chunked_body_over_the_limit_gets_413_not_a_vague_400(tiny_bundle):
    with running_server(tiny_bundle, {"DERMALENS_MAX_BODY_BYTES": "100000"}) as url:
        def chunks():  # no Content-Length: the body arrives in pieces
            yield b'{"image": "'
            for _ in range(30):
                yield b"A" * 8192
            yield b'"}'
        r = httpx.post(url + "/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        small = b'{"image": "' + b64(LESION.read_bytes()).encode() + b'"}'
        r = httpx.post(url + "/predict", content=iter([small[:500], small[500:]]),
                       headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["success"] is True  # a chunked body under the limit still works


def test_an_upload_with_two_files_or_unknown_fields_is_refused_not_half_read(api):
    r = api.post("/predict/upload", files=[("file", ("a.jpg", LESION.read_bytes(), "image/jpeg")),
                                           ("file", ("b.jpg", LESION.read_bytes(), "image/jpeg"))])
    assert r.status_code == 422 and "/predict/batch" in r.json()["error"]["message"]
    r = api.post("/predict/upload", files={"file": ("a.jpg", LESION.read_bytes(), "image/jpeg")},
                 data={"Age": "40", "location": "back"})
    assert r.status_code == 422 and "['Age', 'location']" in r.json()["error"]["message"]


@pytest.mark.parametrize("metadata, status", [({"age": True}, 422), ({"age": "nan"}, 422),
                                              ({"sex": "Male", "site": "lower_extremity"}, 200)])
def test_metadata_reads_as_the_upload_form_does(api, metadata, status):
    r = api.post("/predict", json={"image": b64(LESION.read_bytes()), "metadata": metadata})
    assert r.status_code == status, r.text
    if status == 422:
        assert "metadata.age" in r.json()["error"]["message"]
    else:
        assert r.json()["metadata"]["given"] == {"age": None, "sex": "male", "site": "lower extremity"}


@pytest.mark.parametrize("env, message", [({"DERMALENS_MAX_BODY_BYTES": "-1"}, "at least 1"),
                                          ({"DERMALENS_MAX_BATCH": "0"}, "at least 1"),
                                          ({"DERMALENS_UPLOAD_DIR": "/proc/no-such-folder"}, "cannot be written")])
def test_bad_settings_stop_the_server_at_start_with_their_name(tiny_bundle, env, message):
    r = subprocess.run([sys.executable, "-m", "dermalens.cli", "serve", "--port", "1", "--model", str(tiny_bundle)],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and next(iter(env)) in r.stderr and message in r.stderr and "Traceback" not in r.stderr



@pytest.mark.parametrize("kind", ["application/x-www-form-urlencoded", "text/plain", "image/jpeg", None])
def test_a_json_body_sent_under_another_type_is_told_to_say_json(api, kind):
    """curl -d without -H sends its form type: the body was exactly {"image": ...} yet was told to be a JSON object."""
    body = json.dumps({"image": b64(LESION.read_bytes())}).encode()
    r = api.post("/predict", content=body, headers={"content-type": kind} if kind else {})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", r.text
    assert "Content-Type: application/json" in r.json()["error"]["message"]
    ok = api.post("/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_body_that_is_not_utf8_is_invalid_json_with_a_documented_code(api, path):
    r = api.post(path, content=b'{"image": "\xff"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert "not valid JSON" in r.json()["error"]["message"]
