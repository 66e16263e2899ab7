"""The window's layout at the sizes people use: the smallest the app allows, 1280x720 and 1366x768 laptops,
and 1920x1080. Whatever a prediction shows must be on show whole, not cut off at the right or the bottom."""
import pytest

from conftest import FIXTURES
from test_gui import _labelled_set, app_factory, pump, screenshot  # noqa: F401 (a fixture shared with test_gui)

pytestmark = pytest.mark.slow

IMAGE = sorted((FIXTURES / "fullres").glob("*.jpg"))[0]
SIZES = [(900, 680), (1280, 720), (1366, 768), (1920, 1080)]  # 900x680: the app's minsize


def _answer():
    """An assessed image with every class named as the shipped model names them, and the longest headline the
    window shows (uncertain, and chosen over a more probable class)."""
    from dermalens.classes import CLASSES, CODES
    probs = {"akiec": 0.003, "bcc": 0.102, "bkl": 0.002, "df": 0.014, "mel": 0.412, "nv": 0.459, "vasc": 0.008}
    return {"success": True,
            "predictions": sorted(({"label": c.name, "code": c.code, "prob": probs[c.code]} for c in CLASSES),
                                  key=lambda p: -p["prob"]),
            "prediction": {"predicted_class": "Melanoma", "code": "mel", "confidence": 0.412,
                           "all_probabilities": [probs[c] for c in CODES], "confident": False,
                           "most_probable": "nv"},
            "malignancy": {"probability": 0.527, "label": "malignant", "threshold": 0.104},
            "risk": {"level": "high", "recommendation": "The model found signs that this lesion may be malignant. "
                     "See a dermatologist soon, within weeks, and bring this image; do not wait for it to change."},
            "quality": {"in_distribution": True, "reasons": []}, "tta": False, "metadata": {"used": False}}


def _not_assessed():
    return {"success": True, "predictions": [], "prediction": None, "malignancy": None,
            "risk": {"level": "indeterminate", "recommendation": "This image was not assessed. Send a dermoscopic "
                                                                 "image of the lesion itself; see a dermatologist."},
            "quality": {"in_distribution": False, "reasons": [
                {"code": "not_dermoscopic", "message": "This looks like an ordinary photo, not a dermoscopic image. "
                                                       "dermalens only reads dermoscopic images taken with a "
                                                       "dermatoscope"},
                {"code": "ood", "message": "It is unlike the images the model was trained on"}]},
            "tta": False, "metadata": {"used": False}}


class Canned:
    description = "canned answers"

    def __init__(self, answer):
        self.answer = answer

    def predict(self, path, **kw):
        return self.answer


def _window(app_factory, size, answer):
    app, errors = app_factory(backend=Canned(answer))
    root = app.root
    root.maxsize(*size)  # Tk's default maximum is the screen, and the test display is 1280x860
    root.geometry(f"{size[0]}x{size[1]}+0+0")
    pump(root, lambda: (root.winfo_width(), root.winfo_height()) == size, timeout=30)
    return app, errors


def _rect(w):
    return w.winfo_rootx(), w.winfo_rooty(), w.winfo_rootx() + w.winfo_width(), w.winfo_rooty() + w.winfo_height()


def _cut_off(w) -> str:
    """'' when the widget is on show whole; otherwise how it is cut off: squeezed below the size it asks for
    (a label's text cut, a bar's end), or partly outside a frame that holds it, up to the window itself."""
    if not w.winfo_ismapped():
        return f"{w} is not shown"
    if w.winfo_width() < w.winfo_reqwidth() or w.winfo_height() < w.winfo_reqheight():
        return f"{w} is {w.winfo_width()}x{w.winfo_height()} of the {w.winfo_reqwidth()}x{w.winfo_reqheight()} it needs"
    x0, y0, x1, y1 = _rect(w)
    p = w.master
    while p is not None:
        px0, py0, px1, py1 = _rect(p)
        if x0 < px0 or y0 < py0 or x1 > px1 or y1 > py1:
            return f"{w} at {(x0, y0, x1, y1)} is outside {p} at {(px0, py0, px1, py1)}"
        p = p.master
    return ""


def _font(w, style=None):
    import tkinter as tk
    import tkinter.font as tkfont
    from tkinter import ttk
    try:
        name = w.cget("font")
    except tk.TclError:  # a ttk widget whose font is its style's
        name = ""
    return tkfont.Font(root=w, font=name or ttk.Style(w).lookup(style or w.winfo_class(), "font") or "TkDefaultFont")


def _whole_text(label) -> str:
    """'' when every line of the label's text fits its width (ttk labels with a fixed width cut the rest)."""
    lines = label.cget("text").split("\n") if float(str(label.cget("wraplength") or 0)) <= 0 else []
    too_wide = [t for t in lines if _font(label).measure(t) > label.winfo_width()]
    return f"{label} shows {too_wide} cut at {label.winfo_width()} px" if too_wide else ""


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_prediction_is_shown_whole(app_factory, display, artifacts, size):
    app, errors = _window(app_factory, size, _answer())
    # before any image: the patient details are filled in first, so they must be there to fill
    pump(app.root, lambda: True)
    problems = [_cut_off(w) for w in (app.open_button, app.age_entry, app.sex_box, app.site_box, app.top_label,
                                      app.canvas, app.warn)]
    app.open_image(IMAGE)
    pump(app.root, lambda: not app.busy, timeout=30)
    assert not errors and app.assessment.winfo_ismapped()
    if size == (1280, 720):
        screenshot(display, artifacts / "gui_1280x720.png", app.root)
    shown = [app.warn, app.canvas, app.top_label, app.risk_label, app.recommendation, app.malignancy_label,
             app.mal_canvas, app.status]
    problems += [_cut_off(w) for w in shown]
    for code, (name, bar, value) in app.bars.items():
        problems += [_cut_off(name), _cut_off(bar), _cut_off(value), _whole_text(name), _whole_text(value)]
        assert value.cget("text").endswith(" %") and name.cget("text")
        assert bar.winfo_width() >= 100, f"{code}'s bar is {bar.winfo_width()} px: too short to read"
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
    assert "Melanocytic nevus" in app.top_label.cget("text")
    if size[0] >= 1366:  # room enough: the preview at full size, not shrunk
        assert app.canvas.winfo_width() >= 460 and app.canvas.winfo_height() >= 345


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_reason_an_image_was_not_assessed_is_shown_whole(app_factory, size):
    app, errors = _window(app_factory, size, _not_assessed())
    app.open_image(IMAGE)
    pump(app.root, lambda: not app.busy, timeout=30)
    assert not errors and app.ood_label.winfo_ismapped() and not app.assessment.winfo_ismapped()
    problems = [_cut_off(w) for w in (app.warn, app.canvas, app.top_label, app.ood_label, app.risk_label,
                                      app.recommendation, app.status)]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("size", SIZES[:2], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_batch_view_is_shown_whole(app_factory, tmp_path, size):
    from dermalens.gui.batch import metrics_text
    _labelled_set(tmp_path, n=3, layout="beside")
    app, errors = _window(app_factory, size, _answer())
    app.notebook.select(1)
    app.start_batch(str(tmp_path), str(tmp_path / "labels.csv"))
    pump(app.root, lambda: str(app.start_button.cget("state")) != "disabled", timeout=60)
    assert not errors and len(app.tree.get_children()) == 3
    buttons = [w for w in _descendants(app.batch) if w.winfo_class() in ("TButton", "TEntry")]
    assert len(buttons) == 7  # Folder, Labels CSV, Start, Cancel, Export CSV and the two paths
    problems = [_cut_off(w) for w in buttons + [app.batch_progress, app.tree, app.metrics_box, app.status]]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
    columns = sum(app.tree.column(c, "width") for c in app.tree["columns"])
    assert columns <= app.tree.winfo_width(), "the table's right-hand columns are cut off"
    for c in app.tree["columns"]:  # each heading readable
        assert _font(app.tree, "Heading").measure(c) < app.tree.column(c, "width"), c
    text = app.metrics_box
    inner = text.winfo_width() - 2 * (int(text.cget("borderwidth")) + int(text.cget("padx"))
                                      + int(text.cget("highlightthickness")))
    widest = max(metrics_text(app.batch_result.metrics).splitlines(), key=_font(text).measure)
    assert _font(text).measure(widest) <= inner, f"{widest!r} does not fit the metrics panel"


def _descendants(w):
    for c in w.winfo_children():
        yield c
        yield from _descendants(c)


def test_a_result_stays_whole_when_the_window_is_made_smaller_and_larger(app_factory):
    app, errors = _window(app_factory, (1920, 1080), _answer())
    app.open_image(IMAGE)
    pump(app.root, lambda: not app.busy, timeout=30)
    big = app.canvas.winfo_width()
    for size in [(900, 680), (1920, 1080)]:
        app.root.geometry(f"{size[0]}x{size[1]}")
        pump(app.root, lambda: (app.root.winfo_width(), app.root.winfo_height()) == size, timeout=30)
        widgets = [app.canvas, app.top_label, app.recommendation, app.malignancy_label, app.mal_canvas]
        problems = [_cut_off(w) for w in widgets + [w for bar in app.bars.values() for w in bar]]
        problems = [p for p in problems if p]
        assert not problems, f"at {size}: " + "\n".join(problems)
    assert app.canvas.winfo_width() == big and not errors  # the preview back at full size


def test_class_names_are_measured_again_only_when_they_or_the_font_change(app_factory, monkeypatch):
    """Before: every resize of the window measured every class name again."""
    import tkinter.font as tkfont

    from dermalens.gui.app import _style_font
    app, errors = _window(app_factory, (1280, 720), _answer())
    app.open_image(IMAGE)
    pump(app.root, lambda: not app.busy, timeout=30)
    measured, measure = [], tkfont.Font.measure
    monkeypatch.setattr(tkfont.Font, "measure", lambda self, text, *a, **k: measured.append(text) or
                        measure(self, text, *a, **k))
    for size in [(900, 680), (1100, 700), (1280, 720)]:  # within the maxsize _window sets
        app.root.geometry(f"{size[0]}x{size[1]}")
        pump(app.root, lambda: (app.root.winfo_width(), app.root.winfo_height()) == size, timeout=30)
    assert not measured and not errors, measured
    font = _style_font(app.root, "TLabel")
    points = font.actual("size")
    font.configure(size=points + 4 if points > 0 else points - 4)  # negative: pixels
    before = app._names_measured[1]
    app._fit_result()
    assert measured and app._names_measured[1] > before
