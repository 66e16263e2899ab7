"""`dermalens gui`: Tkinter window with a single-image view and a batch view.

Work runs in background threads; results come back through a queue polled with
`after`, so the window never freezes and Tk is only touched from its own thread.
"""
from __future__ import annotations

import base64
import io
import os
import queue
import threading
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, messagebox, ttk

from PIL import Image, ImageTk

from .. import DISCLAIMER
from ..classes import CODES, MALIGNANT_CODES
from ..inference.metadata import SITES
from ..inference.risk import COLOURS
from .backend import BackendError, LocalBackend, RemoteBackend
from .batch import batch_items, export_csv, metrics_text, missing_text, run_batch

FILETYPES = [("Images", "*.jpg *.jpeg *.png *.bmp *.gif *.webp *.tif *.tiff"), ("All files", "*")]
VIEW = (460, 345)
NOT_GIVEN = "not given"


class App:
    def __init__(self, root: tk.Tk, model: str | None = None, api: str | None = None, backend=None):
        self.root = root
        root.title("dermalens: skin-lesion classifier (research and education only)")
        root.geometry("1280x800")
        root.minsize(900, 680)  # the image, patient details and status line all fit (the window asks ~650)
        self.queue: queue.Queue = queue.Queue()
        self.backend = backend
        self.result: dict | None = None
        self.image: Image.Image | None = None
        self.batch_rows: list[dict] = []
        self.cancel = threading.Event()
        self.busy = False
        self.batch_labels: str | None = None
        self._build()
        if self.backend is None:
            self._connect(model, api)
        root.after(50, self._poll)

    # ---- layout -------------------------------------------------------------------------
    def _build(self):
        top = ttk.Frame(self.root, padding=6)
        top.pack(fill="x")
        self.source_label = ttk.Label(top, text="connecting…")
        self.source_label.pack(side="left")
        self.warn = tk.Label(self.root, text=DISCLAIMER, bg="#fff3cd", fg="#333", wraplength=1200, justify="left",
                             padx=8, pady=4)
        self.warn.pack(fill="x")
        _wrap_to_width(self.warn, self.warn)  # a narrow window must still show the whole disclaimer
        # packed before the notebook: pack squeezes out the last-packed widget first, and errors show here
        self.status = ttk.Label(self.root, text="", anchor="w", relief="sunken", padding=3)
        self.status.pack(fill="x", side="bottom")
        self.notebook = ttk.Notebook(self.root)
        self.notebook.pack(fill="both", expand=True, padx=6, pady=6)
        self.single = ttk.Frame(self.notebook, padding=8)
        self.batch = ttk.Frame(self.notebook, padding=8)
        self.notebook.add(self.single, text="Single image")
        self.notebook.add(self.batch, text="Batch (folder)")
        self._build_single()
        self._build_batch()

    def _build_single(self):
        left = ttk.Frame(self.single)
        left.pack(side="left", fill="y")
        bar = ttk.Frame(left)
        bar.pack(fill="x")
        self.open_button = ttk.Button(bar, text="Open image…", command=self.choose_image)
        self.open_button.pack(side="left")
        self.heat = tk.BooleanVar(value=False)
        ttk.Checkbutton(bar, text="Heat-map (Grad-CAM)", variable=self.heat,
                        command=self._show_image).pack(side="left", padx=8)
        # The four flips averaged: the same answer however the picture is held (a single view changes
        # its answer for about 1 image in 10 when flipped, experiments/measure_flip_consistency.py).
        self.tta = tk.BooleanVar(value=False)
        ttk.Checkbutton(bar, text="Steadier (4 views, slower)", variable=self.tta).pack(side="left")
        self.canvas = tk.Label(left, width=VIEW[0], height=VIEW[1], bg="#ddd", text="no image")
        self.canvas.pack(pady=6)
        self.meta_label = ttk.Label(left, text="")
        self.meta_label.pack(anchor="w")
        # Optional patient details: any left at "not given" is marginalised by the model, not guessed.
        patient = ttk.LabelFrame(left, text="Patient details (optional)", padding=4)
        patient.pack(fill="x", pady=4)
        self.age_var, self.sex_var, self.site_var = tk.StringVar(), tk.StringVar(value=NOT_GIVEN), \
            tk.StringVar(value=NOT_GIVEN)
        ttk.Label(patient, text="Age").pack(side="left")
        self.age_entry = ttk.Entry(patient, textvariable=self.age_var, width=5)
        self.age_entry.pack(side="left", padx=(2, 8))
        ttk.Label(patient, text="Sex").pack(side="left")
        self.sex_box = ttk.Combobox(patient, textvariable=self.sex_var, values=(NOT_GIVEN, "female", "male"),
                                    state="readonly", width=9)
        self.sex_box.pack(side="left", padx=(2, 8))
        ttk.Label(patient, text="Site").pack(side="left")
        self.site_box = ttk.Combobox(patient, textvariable=self.site_var, values=(NOT_GIVEN,) + SITES,
                                     state="readonly", width=15)
        self.site_box.pack(side="left", padx=2)
        self.spinner = ttk.Progressbar(left, mode="indeterminate", length=VIEW[0])
        self.spinner.pack(pady=4)

        right = ttk.Frame(self.single, padding=(16, 0))
        right.pack(side="left", fill="both", expand=True)
        self.top_label = ttk.Label(right, text="Open a dermoscopic image to classify it.", font=("TkDefaultFont", 15, "bold"))
        self.top_label.pack(anchor="w")
        self.ood_label = tk.Label(right, text="", fg="#fff", bg="#616161", wraplength=640, justify="left")
        self.risk_label = tk.Label(right, text="", fg="#fff", bg="#999", font=("TkDefaultFont", 12, "bold"),
                                   padx=6, pady=3)
        self.risk_label.pack(anchor="w", pady=(8, 2))
        self.recommendation = ttk.Label(right, text="", wraplength=640, justify="left")
        self.recommendation.pack(anchor="w")
        _wrap_to_width(right, self.ood_label, self.recommendation)  # the reason not to assess must be read whole
        # Scores and bars: hidden for an image that is not assessed (no diagnosis is shown for it).
        self.assessment = ttk.Frame(right)
        self.assessment.pack(anchor="w", fill="x")
        self.malignancy_label = ttk.Label(self.assessment, text="")
        self.malignancy_label.pack(anchor="w", pady=(10, 0))
        self.mal_canvas = tk.Canvas(self.assessment, width=400, height=18, bg="#e6e9ee", highlightthickness=0)
        self.mal_canvas.pack(anchor="w")
        ttk.Label(self.assessment, text="Class probabilities").pack(anchor="w", pady=(12, 2))
        self.bars: dict[str, tuple[ttk.Label, ttk.Progressbar, ttk.Label]] = {}
        grid = ttk.Frame(self.assessment)
        grid.pack(anchor="w", fill="x")
        for i, code in enumerate(CODES):
            name = ttk.Label(grid, text=code, width=44)
            pb = ttk.Progressbar(grid, maximum=100, length=260)
            val = ttk.Label(grid, text="", width=8)
            name.grid(row=i, column=0, sticky="w")
            pb.grid(row=i, column=1, padx=4, pady=2)
            val.grid(row=i, column=2, sticky="e")
            self.bars[code] = (name, pb, val)

    def _build_batch(self):
        bar = ttk.Frame(self.batch)
        bar.pack(fill="x")
        self.folder_var = tk.StringVar()
        self.labels_var = tk.StringVar()
        ttk.Button(bar, text="Folder…", command=lambda: self.folder_var.set(filedialog.askdirectory() or
                                                                             self.folder_var.get())).pack(side="left")
        ttk.Entry(bar, textvariable=self.folder_var, width=40).pack(side="left", padx=4)
        ttk.Button(bar, text="Labels CSV (optional)…", command=lambda: self.labels_var.set(
            filedialog.askopenfilename(filetypes=[("CSV", "*.csv")]) or self.labels_var.get())).pack(side="left")
        ttk.Entry(bar, textvariable=self.labels_var, width=30).pack(side="left", padx=4)
        self.start_button = ttk.Button(bar, text="Start", command=self.start_batch)
        self.start_button.pack(side="left", padx=4)
        self.cancel_button = ttk.Button(bar, text="Cancel", command=self.cancel.set, state="disabled")
        self.cancel_button.pack(side="left")
        ttk.Button(bar, text="Export CSV…", command=self.export).pack(side="left", padx=4)
        self.batch_progress = ttk.Progressbar(self.batch, maximum=100)
        self.batch_progress.pack(fill="x", pady=6)
        body = ttk.Frame(self.batch)
        body.pack(fill="both", expand=True)
        cols = ("file", "true", "prediction", "confidence", "malignancy", "risk", "metadata_used")
        self.tree = ttk.Treeview(body, columns=cols, show="headings", height=20)
        for c in cols:
            self.tree.heading(c, text=c, command=lambda c=c: self.sort_by(c))
            self.tree.column(c, width=150 if c == "file" else 90, anchor="w")
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="left", fill="y")
        self.metrics_box = tk.Text(body, width=58, font=("TkFixedFont", 10))
        self.metrics_box.pack(side="left", fill="both", padx=(8, 0))
        self._sort_desc = False

    # ---- plumbing ------------------------------------------------------------------------
    def _connect(self, model, api):
        try:
            # the key from the environment, as the server reads it: a key on a command line is seen by every user
            key = (os.environ.get("DERMALENS_API_KEY") or "").strip() or None  # a secret file's newline, as the server
            # `--api ''` is a URL the user got wrong, not a request for local mode
            self.backend = RemoteBackend(api, api_key=key) if api is not None else LocalBackend(model)
            self.source_label.config(text=self.backend.description)
        except Exception as e:  # BackendError, or anything else: shown in the window, never a crash
            msg = str(e) if isinstance(e, BackendError) else f"cannot start: {e} ({type(e).__name__})"
            self.backend = None
            self.source_label.config(text="no model")
            self.set_status(msg, error=True)
            messagebox.showerror("dermalens", msg, parent=self.root)

    def set_status(self, text: str, error: bool = False):
        self.status.config(text=text, foreground="#b00020" if error else "")

    def _poll(self):
        try:
            while True:
                kind, payload = self.queue.get_nowait()
                getattr(self, f"_on_{kind}")(payload)
        except queue.Empty:
            pass
        self.root.after(50, self._poll)

    def _worker(self, fn, kind):
        error = "batch_error" if kind == "batch_done" else "error"  # each failure resets only its own controls

        def run():
            try:
                self.queue.put((kind, fn()))
            except BackendError as e:
                self.queue.put((error, str(e)))
            except Exception as e:  # keep the window alive whatever happens
                self.queue.put((error, f"unexpected error: {e}"))
        threading.Thread(target=run, daemon=True).start()

    # ---- single image ------------------------------------------------------------------
    def choose_image(self):
        path = filedialog.askopenfilename(filetypes=FILETYPES)
        if path:
            self.open_image(path)

    def open_image(self, path: str | Path):
        if self.backend is None:
            self.set_status("no model loaded", error=True)
            return
        if self.busy:  # a dropped file while one is classified: said, not lost without a word
            self.set_status(f"still classifying; open {Path(path).name} again once the result is shown", error=True)
            return
        from ..preprocess import ImageError, load_rgb, open_image, upright_size
        try:
            with open_image(path) as meta:  # only its size and format: the file is closed at once
                fmt, size = meta.format, upright_size(meta)
            self.image = load_rgb(path, at_least=max(VIEW))  # only shown, at most VIEW
        except ImageError as e:
            message = f"{Path(path).name}: {e}"  # which file, when several were tried
            self.set_status(message, error=True)
            messagebox.showerror("dermalens", message, parent=self.root)
            return
        self.result = None
        self._clear_result(f"classifying {Path(path).name}…")  # the last image's answer must not sit beside this one
        self.meta_label.config(text=f"{Path(path).name}: {size[0]}x{size[1]} {fmt}")
        self._show_image()
        self.busy = True
        self.spinner.start(12)
        self.open_button.config(state="disabled")
        self.set_status(f"classifying {Path(path).name}…")
        tta, metadata = self.tta.get(), self.patient_details()
        self._worker(lambda: self.backend.predict(path, explain=True, tta=tta, metadata=metadata), "result")

    def patient_details(self) -> dict | None:
        """The API's metadata object from the fields (None when nothing is given); values are checked
        by the backend, whose error names the accepted ones."""
        m = {"age": self.age_var.get().strip() or None,
             "sex": None if self.sex_var.get() == NOT_GIVEN else self.sex_var.get(),
             "site": None if self.site_var.get() == NOT_GIVEN else self.site_var.get()}
        return {k: v for k, v in m.items() if v is not None} or None

    def _on_result(self, r: dict):
        self.busy = False
        self.spinner.stop()
        self.spinner.config(value=0)
        self.open_button.config(state="normal")
        self.result = r
        try:
            self.show_result(r)
        except Exception as e:  # an answer the window cannot read: a message, not a dead polling loop
            self.result = None
            self._clear_result("No result (see the message below)")
            self._on_error(f"the answer could not be shown ({type(e).__name__}: {e})")
            return
        self.set_status("done" + (" (4 views averaged)" if r.get("tta") else ""))

    def _clear_result(self, text: str):
        self.top_label.config(text=text)
        self.risk_label.config(text="", bg="#999")
        self.recommendation.config(text="")
        self.ood_label.pack_forget()
        self.assessment.pack_forget()

    def _on_error(self, msg: str):
        if self.busy:  # a single image failed: its panel says so rather than staying at "classifying"
            self._clear_result("No result (see the message below)")
        self.busy = False
        self.spinner.stop()
        self.open_button.config(state="normal")
        self._show_error(msg)

    def _on_batch_error(self, msg: str):
        self.start_button.config(state="normal")
        self.cancel_button.config(state="disabled")
        self._show_error(msg)

    def _show_error(self, msg: str):
        self.set_status(msg, error=True)
        messagebox.showerror("dermalens", msg, parent=self.root)

    def _show_image(self):
        img = self.image
        if self.heat.get() and self.result and self.result.get("explanation"):
            data = self.result["explanation"]["overlay"].split(",", 1)[1]
            img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        if img is None:
            return
        img = img.copy()
        img.thumbnail(VIEW)
        self._photo = ImageTk.PhotoImage(img)
        self.canvas.config(image=self._photo, text="", width=VIEW[0], height=VIEW[1])

    def show_result(self, r: dict):
        top, q, risk = r["prediction"], r["quality"], r["risk"]
        self.risk_label.config(text=f"Risk: {risk['level']}", bg=COLOURS[risk["level"]])
        self.recommendation.config(text=risk["recommendation"])
        if not q["in_distribution"]:
            self.top_label.config(text="Not assessed")
            self.ood_label.config(text="\n".join(f"• {x['message']}." for x in q["reasons"]),
                                  font=("TkDefaultFont", 12, "bold"), padx=8, pady=6)
            self.ood_label.pack(anchor="w", after=self.top_label, pady=4)
            self.assessment.pack_forget()
            self._show_image()
            return
        self.ood_label.pack_forget()
        self.assessment.pack(anchor="w", fill="x")
        names = {p["code"]: p["label"] for p in r["predictions"]}
        for code, (name, pb, val) in self.bars.items():
            p = top["all_probabilities"][CODES.index(code)]
            name.config(text=names.get(code, code) + (" (malignant)" if code in MALIGNANT_CODES else ""))
            pb.config(value=100 * p)
            val.config(text=f"{100 * p:.1f} %")
        suffix = "" if top["confident"] else "  (uncertain: below 50 %)"
        if top.get("most_probable", top["code"]) != top["code"]:
            suffix += f"\n(chosen over the more probable {names.get(top['most_probable'])}: rarer diagnoses are " \
                      "weighted up in close calls)"
        self.top_label.config(text=f"{top['predicted_class']}: {100 * top['confidence']:.1f} %{suffix}")
        m = r["malignancy"]
        used = bool((r.get("metadata") or {}).get("used"))
        self.malignancy_label.config(text=f"Malignancy score {100 * m['probability']:.1f} % ({m['label']}; "
                                          f"threshold {100 * m['threshold']:.1f} %)\n"
                                          + ("patient details used" if used else "image only (no patient details used)"))
        c = self.mal_canvas
        c.delete("all")
        c.create_rectangle(0, 0, 400 * m["probability"], 18, fill="#c62828", width=0)
        x = 400 * m["threshold"]
        c.create_line(x, 0, x, 18, width=2)
        self._show_image()

    # ---- batch ---------------------------------------------------------------------------
    def start_batch(self, folder: str | None = None, labels: str | None = None):
        if self.backend is None:
            self.set_status("no model loaded", error=True)
            return
        folder = folder or self.folder_var.get()
        labels = labels if labels is not None else (self.labels_var.get() or None)
        if not folder:
            self.set_status("choose a folder first", error=True)
            return
        self.folder_var.set(folder)
        self.labels_var.set(labels or "")
        try:
            items = batch_items(folder, labels)
        except BackendError as e:
            self._show_error(str(e))
            return
        except Exception as e:  # on the Tk thread: an escaped error would show nothing at all
            self._show_error(f"cannot read {labels or folder}: {e} ({type(e).__name__})")
            return
        self.batch_labels = labels
        self.cancel.clear()
        self.start_button.config(state="disabled")
        self.cancel_button.config(state="normal")
        self.tree.delete(*self.tree.get_children())
        self.metrics_box.delete("1.0", "end")
        self.batch_progress.config(value=0)
        self.set_status(f"classifying {len(items)} images…")

        def progress(done, total):
            self.queue.put(("progress", (done, total)))
        self._worker(lambda: run_batch(self.backend, items, self.cancel, progress), "batch_done")

    def _on_progress(self, payload):
        done, total = payload
        self.batch_progress.config(value=100 * done / total)

    def _on_batch_done(self, res):
        self.start_button.config(state="normal")
        self.cancel_button.config(state="disabled")
        self.batch_rows = res.rows
        self._fill_tree(res.rows)
        if res.missing:
            self.metrics_box.insert("end", f"{missing_text(res.missing, Path(self.batch_labels or '').name)}: "
                                           "the figures below leave them out.\n\n")
        for note in res.notes:
            self.metrics_box.insert("end", f"{note}.\n\n")
        if res.not_assessed:
            self.metrics_box.insert("end", f"{res.not_assessed} image(s) not assessed (see the table); the figures "
                                           "below count only the assessed ones.\n\n")
        if res.metrics:
            self.metrics_box.insert("end", metrics_text(res.metrics))
        for e in res.errors:
            self.metrics_box.insert("end", f"\nskipped {e['file']}: {e['error']}")
        state = "cancelled" if res.cancelled else "done"
        status = f"batch {state}: {len(res.rows)} classified, {len(res.errors)} skipped"
        if res.missing:
            status += "; " + missing_text(res.missing, Path(self.batch_labels or "").name)
        if res.notes:
            status += f"; {len(res.notes)} image(s) listed twice, counted once (see the panel)"
        self.set_status(status)
        self.batch_result = res

    def _fill_tree(self, rows):
        self.tree.delete(*self.tree.get_children())
        for r in rows:
            self.tree.insert("", "end", values=(r["file"], r["true"], r["prediction"], _num(r["confidence"]),
                                                _num(r["malignancy"]), r["risk"],
                                                "yes" if r.get("metadata_used") else "no"))

    def sort_by(self, column: str):
        self._sort_desc = not self._sort_desc
        # an image that was not assessed has no score: it sorts below every score
        self.batch_rows.sort(key=lambda r: (r[column] is not None, r[column] if r[column] is not None else 0),
                             reverse=self._sort_desc)
        self._fill_tree(self.batch_rows)

    def export(self, path: str | None = None):
        path = path or filedialog.asksaveasfilename(defaultextension=".csv", filetypes=[("CSV", "*.csv")])
        if not path:
            return
        try:
            export_csv(self.batch_rows, path)
            self.set_status(f"wrote {path}")
        except (BackendError, OSError) as e:
            self.set_status(str(e), error=True)


def _make_root():
    """A Tk root with drag-and-drop when the optional tkinterdnd2 package is installed."""
    try:
        from tkinterdnd2 import TkinterDnD
        return TkinterDnD.Tk(), True
    except Exception:  # not installed, or its native part does not load on this platform
        return tk.Tk(), False


def run_gui(model: str | None = None, api: str | None = None) -> None:
    try:
        root, dnd = _make_root()
    except tk.TclError as e:
        raise SystemExit(f"dermalens gui: cannot open a window ({e}); is a display available?") from None
    app = App(root, model=model, api=api)
    if dnd:
        from tkinterdnd2 import DND_FILES

        def dropped(event):
            files = root.tk.splitlist(event.data)
            if files:
                app.open_image(files[0])
        app.canvas.drop_target_register(DND_FILES)
        app.canvas.dnd_bind("<<Drop>>", dropped)
        app.set_status("Tip: drop an image onto the picture area")
    root.mainloop()


def _wrap_to_width(frame, *labels):
    """Keep the labels' wraplength at the frame's current width, so their text wraps instead of being cut off."""
    frame.bind("<Configure>", lambda e: [w.config(wraplength=max(200, e.width - 48)) for w in labels], add="+")


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
