"""The Tk app's single-image view and remote mode: stale answers, malformed answers, odd servers."""
import threading

import pytest

from conftest import FIXTURES
from test_gui import app_factory, display, pump  # noqa: F401 (fixtures shared with the main GUI tests)

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
