"""Running the server as an operator would: settings at their limits, odd methods, what the answers say."""
import base64

import pytest
from fastapi.testclient import TestClient

from conftest import FIXTURES
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

IMAGE = base64.b64encode((FIXTURES / "fullres" / "ISIC_0024311.jpg").read_bytes()).decode()


@pytest.fixture(scope="module")
def client(shipped_bundle):
    with TestClient(create_app(Settings(model=str(shipped_bundle), max_queue=2))) as c:
        yield c


def test_a_batch_larger_than_max_queue_is_one_request_not_overloaded(client):
    r = client.post("/predict/batch", json={"images": [IMAGE] * 3})
    assert r.status_code == 200, r.text
    assert [x["success"] for x in r.json()["results"]] == [True] * 3


def test_api_key_from_a_secret_file_with_a_newline_still_matches(shipped_bundle, monkeypatch):
    monkeypatch.setenv("DERMALENS_API_KEY", "s3cret\n")  # as `kubectl create secret --from-file` leaves it
    with TestClient(create_app(Settings.from_env(model=str(shipped_bundle)))) as c:
        r = c.post("/predict", json={"image": IMAGE}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("key", ["clé", "   ", "two\nlines"])
def test_an_api_key_no_client_can_send_stops_start_up(monkeypatch, key):
    monkeypatch.setenv("DERMALENS_API_KEY", key)
    with pytest.raises(SystemExit, match="DERMALENS_API_KEY"):
        Settings.from_env()


@pytest.mark.parametrize("path", ["/health", "/model", "/"])
def test_head_answers_as_get_does(client, path):
    r = client.head(path)
    assert r.status_code == 200 and r.headers["content-type"] == client.get(path).headers["content-type"]


def test_a_wrong_method_says_which_are_allowed(client):
    r = client.request("OPTIONS", "/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


def test_a_bad_workers_variable_is_named(monkeypatch, capsys):
    from dermalens.cli import main
    monkeypatch.setenv("DERMALENS_WORKERS", "0")
    with pytest.raises(SystemExit):
        main(["serve"])
    assert "DERMALENS_WORKERS" in capsys.readouterr().err


@pytest.mark.parametrize("env", [{"DERMALENS_RUNTIME": "openvno"}, {"DERMALENS_PRECISION": "fp16"},
                                 {"DERMALENS_RUNTIME": "onnxruntime", "DERMALENS_PRECISION": "bf16"}])
def test_a_runtime_it_cannot_use_stops_start_up(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit, match="DERMALENS_"):
        Settings.from_env()


def test_infer_mode_is_read_as_the_runtime_is(monkeypatch):
    monkeypatch.setenv("DERMALENS_INFER_MODE", " Throughput ")
    assert Settings.from_env().infer_mode == "throughput"


@pytest.mark.parametrize("name", ["DERMALENS_TIMEOUT_S", "DERMALENS_THREADS"])
def test_a_huge_number_stops_start_up(monkeypatch, name):
    monkeypatch.setenv(name, "9" * 400)
    with pytest.raises(SystemExit, match=f"{name} must be at most"):
        Settings.from_env()


def test_an_upload_dir_under_the_home_folder_is_expanded(tmp_path, monkeypatch):
    from dermalens.serve.settings import Settings
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DERMALENS_UPLOAD_DIR", "~/uploads")
    assert Settings.from_env().upload_dir == str(tmp_path / "uploads")


@pytest.mark.parametrize("endpoint", ["/predict", "/predict/batch"])
def test_a_request_that_timed_out_holds_its_place_until_its_work_ends(shipped_bundle, monkeypatch, endpoint):
    """After a 504 the worker still runs the job; MAX_QUEUE must count it, or timeouts pile up unbounded work."""
    import threading
    from dermalens.serve.app import Engine
    release_job = threading.Event()
    slow = {"first": True}
    infer = Engine.infer

    def first_call_hangs(self, *args, **kwargs):
        if slow.pop("first", False):
            release_job.wait(30)  # the job outlives its request until the test lets it go
        return infer(self, *args, **kwargs)
    monkeypatch.setattr(Engine, "infer", first_call_hangs)
    body = {"image": IMAGE} if endpoint == "/predict" else {"images": [IMAGE]}
    with TestClient(create_app(Settings(model=str(shipped_bundle), max_queue=1, timeout_s=1))) as c:
        assert c.post(endpoint, json=body).status_code == 504
        busy = c.post("/predict", json={"image": IMAGE})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
        release_job.set()
        for _ in range(100):  # the slot comes back once the job has ended
            r = c.post("/predict", json={"image": IMAGE})
            if r.status_code != 503:
                break
            threading.Event().wait(0.05)
        assert r.status_code == 200, r.text


def test_the_admission_bracket_counts_refuses_and_releases_once_the_work_ends():
    """One bracket admits a request (a /predict or a whole batch): it counts it, refuses the one over MAX_QUEUE with
    the 503 clients know, and frees the place only once every job the request started has ended."""
    from concurrent.futures import Future

    from dermalens.serve.app import ApiError, Engine
    engine = Engine(Settings(max_queue=1))
    with pytest.raises(ApiError) as e:
        with engine.admission():
            pass
    assert e.value.code == "model_unavailable" and engine.admitted == 0  # no model: nothing admitted
    engine.predictor = object()  # a loaded model, as far as the bracket is concerned
    job = Future()
    with engine.admission() as jobs:
        jobs.append(job)
        assert engine.admitted == 1
        with pytest.raises(ApiError) as e:
            with engine.admission():
                pass
        assert (e.value.status, e.value.code, e.value.message) == (
            503, "overloaded", "the server is busy (1 requests in progress, limit 1); retry in a moment")
    assert engine.admitted == 1  # the request has ended, its job has not
    job.set_result(None)
    assert engine.admitted == 0
    with pytest.raises(RuntimeError):
        with engine.admission():
            raise RuntimeError("a request that failed")
    assert engine.admitted == 0


def test_single_and_batch_requests_go_through_the_one_admission_bracket(client, monkeypatch):
    from dermalens.serve.app import Engine
    admission, entered = Engine.admission, []

    def counted(self):
        entered.append(1)
        return admission(self)
    monkeypatch.setattr(Engine, "admission", counted)
    assert client.post("/predict", json={"image": IMAGE}).status_code == 200
    assert client.post("/predict/batch", json={"images": [IMAGE] * 2}).status_code == 200
    assert len(entered) == 2 and client.app.state.engine.admitted == 0  # a batch is one request


def test_a_pixel_limit_set_above_pillows_own_is_the_one_that_applies(shipped_bundle, monkeypatch):
    """DERMALENS_MAX_PIXELS above Pillow's decompression-bomb limit (~179 M for its error): an image under the
    operator's limit was refused as "far over the limit of" the operator's own figure."""
    import io

    from PIL import Image
    from test_preprocess import png_header
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    monkeypatch.setenv("DERMALENS_MAX_PIXELS", "300000000")
    monkeypatch.setenv("DERMALENS_MAX_SIDE", "30000")
    small = io.BytesIO()
    Image.new("RGB", (50, 50), (180, 120, 100)).save(small, "PNG")
    with TestClient(create_app(Settings.from_env(model=str(shipped_bundle)))) as c:
        def send(data: bytes):
            return c.post("/predict", json={"image": base64.b64encode(data).decode()})
        r = send(png_header(15_000, 13_000))  # 195 M pixels: header only, so it fails when its pixels are read
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text
        r = send(png_header(20_000, 20_000))
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large", r.text
        message = r.json()["error"]["message"]
        assert "400,000,000 pixels" in message and "limit 300,000,000" in message, message
    with TestClient(create_app(Settings(model=str(shipped_bundle), max_pixels=1_000))) as c:  # a low limit
        r = c.post("/predict", json={"image": base64.b64encode(small.getvalue()).decode()})
        assert r.status_code == 413 and "50x50 = 2,500 pixels (limit 1,000)" in r.json()["error"]["message"], r.text


def test_a_jpeg_over_the_pixel_limit_is_read_at_reduced_scale_a_png_is_refused(shipped_bundle):
    """The limit counts the pixels decoded: a JPEG the view reads at reduced scale passes, a PNG is decoded whole."""
    import io

    from PIL import Image
    with TestClient(create_app(Settings(model=str(shipped_bundle), max_pixels=1_000_000))) as c:
        for fmt, status in (("JPEG", 200), ("PNG", 413)):
            data = io.BytesIO()
            Image.new("RGB", (2000, 1500), (180, 120, 100)).save(data, fmt)
            r = c.post("/predict", json={"image": base64.b64encode(data.getvalue()).decode()})
            assert r.status_code == status, (fmt, r.text)
            if status == 200:
                assert (r.json()["image"]["width"], r.json()["image"]["height"]) == (2000, 1500), r.text


@pytest.fixture()
def no_uvicorn(monkeypatch, shipped_bundle):
    """uvicorn.run recorded, not run: what `dermalens serve` would have started, and whether it got that far."""
    import uvicorn
    started = []
    monkeypatch.setenv("DERMALENS_MODEL", str(shipped_bundle))  # run_server sets it; restored afterwards
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(k))
    return started


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_host_that_cannot_be_served_on_is_named_before_the_model_is_loaded(no_uvicorn, capsys):
    """`--host no-such-host.invalid` was reported by uvicorn ("[Errno -2] Name or service not known", not naming
    the host) only after the model had been loaded."""
    import socket

    from dermalens.cli import main
    port = _free_port()
    assert main(["serve", "--host", "no-such-host.invalid", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "--host no-such-host.invalid" in err and "cannot be resolved" in err and "Traceback" not in err, err
    assert main(["serve", "--host", "192.0.2.1", "--port", str(port)]) == 2  # TEST-NET-1: no machine's own address
    err = capsys.readouterr().err
    assert "--host 192.0.2.1" in err and "not an address of this machine" in err, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"port {port}" in err and "in use" in err and "--port" in err, err
    assert no_uvicorn == []  # none of them got to uvicorn, which loads the model before it binds
    assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 0
    assert [(k["host"], k["port"]) for k in no_uvicorn] == [("127.0.0.1", port)]


@pytest.mark.parametrize("raw", ["lots", "0", "-5"])
def test_the_server_reads_the_pixel_limit_as_every_other_tool_does(monkeypatch, raw):
    """One reader (preprocess.max_pixels_setting) for the server, CLI, desktop app and Dask workers: the same
    value is refused everywhere with the same words, and a good one is the server's limit."""
    monkeypatch.setenv("DERMALENS_MAX_PIXELS", raw)
    with pytest.raises(SystemExit, match="DERMALENS_MAX_PIXELS must be a whole number of pixels"):
        Settings.from_env()
    monkeypatch.setenv("DERMALENS_MAX_PIXELS", " 60000000 ")
    assert Settings.from_env().max_pixels == 60_000_000
