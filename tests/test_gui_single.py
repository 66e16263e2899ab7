"""The Tk app's single-image view and remote mode: stale answers, malformed answers, odd servers."""
import threading

import pytest

from conftest import FIXTURES
from test_gui import app_factory, pump  # noqa: F401 (fixtures shared with the main GUI tests)

pytestmark = pytest.mark.slow

IMAGES = sorted((FIXTURES / "fullres").glob("*.jpg"))


def _answer(code="nv", level="low"):
    """A dermalens /predict answer for an assessed image, as the API gives it."""
    from dermalens.classes import CODES
    probs = [0.9 if c == code else 0.1 / 6 for c in CODES]
    return {"success": True, "predictions": [{"label": code, "code": code, "prob": 0.9}],
            "prediction": {"predicted_class": f"class {code}", "code": code, "confidence": 0.9,
                           "all_probabilities": probs, "confident": True, "most_probable": code},
            "malignancy": {"probability": 0.05, "label": "benign", "threshold": 0.3},
            "risk": {"level": level, "recommendation": "see a doctor if it changes"},
            "quality": {"in_distribution": True, "reasons": []}, "tta": False, "metadata": {"used": False}}


class Scripted:
    """A backend that answers each predict from a list, waiting for `go` so a test can look mid-prediction."""
    description = "scripted backend"

    def __init__(self, *answers):
        self.answers, self.go = list(answers), threading.Event()
        self.go.set()

    def predict(self, path, **kw):
        from dermalens.gui.backend import BackendError
        self.go.wait(30)
        a = self.answers.pop(0)
        if isinstance(a, BackendError):
            raise a
        return a


def test_the_last_images_answer_is_not_shown_beside_the_next(app_factory):
    from dermalens.gui.backend import BackendError
    backend = Scripted(_answer("mel", "high"), BackendError("image too large"))
    app, errors = app_factory(backend=backend)
    app.open_image(IMAGES[0])
    pump(app.root, lambda: not app.busy)
    assert app.top_label.cget("text").startswith("class mel") and app.assessment.winfo_ismapped()
    backend.go.clear()
    app.open_image(IMAGES[1])
    pump(app.root, lambda: True)
    assert "class mel" not in app.top_label.cget("text") and "high" not in app.risk_label.cget("text")
    assert not app.assessment.winfo_ismapped()  # no bars from the first image while the second is classified
    backend.go.set()
    pump(app.root, lambda: not app.busy)
    assert errors == ["image too large"]
    assert "class mel" not in app.top_label.cget("text") and not app.assessment.winfo_ismapped()


def test_an_answer_the_window_cannot_read_is_one_message_and_the_window_keeps_working(app_factory):
    """A server of another version (a risk level this app has no colour for) raised in the polling loop
    before, which then stopped: the window froze at "classifying"."""
    odd = _answer()
    odd["risk"]["level"] = "elevated"
    app, errors = app_factory(backend=Scripted(odd, _answer("bcc")))
    app.open_image(IMAGES[0])
    pump(app.root, lambda: errors, timeout=30)
    assert len(errors) == 1 and "could not be shown" in errors[0] and "Traceback" not in errors[0]
    assert not app.assessment.winfo_ismapped() and app.result is None
    app.open_image(IMAGES[1])
    pump(app.root, lambda: app.result is not None, timeout=30)
    assert app.top_label.cget("text").startswith("class bcc") and len(errors) == 1


@pytest.fixture()
def foreign_server(tmp_path):
    """A program on a loopback port that is not dermalens: `mode` picks what it answers."""
    import http.server
    import json

    def start(mode):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_GET(self):
                if mode == "html":
                    return self._send(200, "<html>router login</html>", "text/html")
                if mode == "404":
                    return self._send(404, "not found", "text/plain")
                self._send(200, json.dumps({"model_loaded": True, "model": {"name": "m", "version": "1"}}))

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._send(200, json.dumps({"hello": "world"}))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    servers = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("mode, says", [("html", "its answer is not JSON"), ("404", "HTTP 404")])
def test_a_server_that_is_not_dermalens_is_named_as_such(app_factory, foreign_server, mode, says):
    url = foreign_server(mode)
    app, errors = app_factory(api=url)
    assert len(errors) == 1 and "not as a dermalens server does" in errors[0] and says in errors[0]
    assert "cannot reach" not in errors[0] and app.backend is None


def test_a_foreign_predict_answer_is_a_message_not_a_frozen_window(app_factory, foreign_server):
    app, errors = app_factory(api=foreign_server("json"))
    assert not errors
    app.open_image(IMAGES[0])
    pump(app.root, lambda: not app.busy, timeout=30)
    assert len(errors) == 1 and "not as a dermalens server does" in errors[0] and "KeyError" not in errors[0]
    assert "classifying" not in app.status.cget("text") and not app.assessment.winfo_ismapped()


def test_a_server_that_does_not_answer_in_time_says_so():
    import socket

    from dermalens.gui.backend import BackendError, RemoteBackend
    with socket.socket() as s:  # listens, never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(BackendError, match=r"did not answer within 0\.5 s"):
            RemoteBackend(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=0.5)


def _not_assessed():
    return {"success": True, "predictions": [], "prediction": None, "malignancy": None,
            "risk": {"level": "indeterminate", "recommendation": "This image was not assessed. Send a dermoscopic "
                                                                 "image of the lesion itself; see a dermatologist."},
            "quality": {"in_distribution": False, "reasons": [{"code": "not_dermoscopic", "message": (
                "This looks like an ordinary photo, not a dermoscopic image. dermalens only reads dermoscopic "
                "images taken with a dermatoscope")}]}, "tta": False, "metadata": {"used": False}}


def test_the_smallest_window_shows_the_disclaimer_the_reason_and_the_status_whole(app_factory):
    app, errors = app_factory(backend=Scripted(_not_assessed()))
    root = app.root
    root.geometry("900x600")  # as small as the user can drag it
    app.open_image(IMAGES[0])
    pump(root, lambda: not app.busy, timeout=30)
    bottom = root.winfo_rooty() + root.winfo_height()
    assert app.warn.winfo_reqwidth() <= root.winfo_width()  # not cut off at both ends
    right = app.ood_label.master
    assert app.ood_label.winfo_ismapped() and app.ood_label.winfo_reqwidth() <= right.winfo_width()
    assert app.recommendation.winfo_reqwidth() <= right.winfo_width()
    for w in (app.status, app.age_entry, app.site_box):  # errors are shown in the status line
        assert w.winfo_ismapped() and w.winfo_rooty() + w.winfo_height() <= bottom, w


def test_a_single_image_failing_during_a_batch_leaves_the_batch_cancellable(app_factory, tmp_path):
    """Before, any error re-enabled Start and disabled Cancel, though the batch still ran."""
    import shutil

    from dermalens.gui.backend import BackendError
    go = threading.Event()

    class Backend:
        description = "test backend"

        def predict(self, path, **kw):
            if str(path) == str(IMAGES[1]):
                raise BackendError("the single image failed")
            go.wait(30)
            return _answer()
    shutil.copy(IMAGES[0], tmp_path / IMAGES[0].name)
    app, errors = app_factory(backend=Backend())
    app.start_batch(str(tmp_path))
    app.open_image(IMAGES[1])
    pump(app.root, lambda: errors, timeout=30)
    assert errors == ["the single image failed"]
    assert str(app.start_button.cget("state")) == "disabled" and str(app.cancel_button.cget("state")) == "normal"
    go.set()
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled", timeout=30)
    assert len(app.tree.get_children()) == 1 and len(errors) == 1


def test_an_image_opened_while_one_is_classified_is_told_not_dropped(app_factory):
    backend = Scripted(_answer())
    app, errors = app_factory(backend=backend)
    backend.go.clear()
    app.open_image(IMAGES[0])
    app.open_image(IMAGES[1])  # a second drop while the first is classified
    assert "still classifying" in app.status.cget("text") and IMAGES[1].name in app.status.cget("text")
    backend.go.set()
    pump(app.root, lambda: not app.busy)
    assert not errors


def test_an_unreadable_image_is_named_in_its_message(app_factory, tmp_path):
    broken = tmp_path / "broken lesion.jpg"
    broken.write_bytes(IMAGES[0].read_bytes()[:200])
    app, errors = app_factory(backend=Scripted())
    app.open_image(broken)
    assert errors and errors[-1].startswith("broken lesion.jpg: ") and not app.busy
