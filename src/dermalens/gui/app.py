"""`dermalens gui`: Tkinter window with a single-image view and a batch view.

Work runs in background threads; results come back through a queue polled with
`after`, so the window never freezes and Tk is only touched from its own thread.
"""
from __future__ import annotations

import base64
import io
import queue
import threading
import tkinter as tk
import tkinter.font as tkfont
from pathlib import Path
from tkinter import filedialog, messagebox, ttk

from PIL import Image, ImageTk

from .. import DISCLAIMER
from ..classes import CODES, MALIGNANT_CODES, NAMES
from ..inference.metadata import SITES
from ..inference.risk import COLOURS
from ..serve.settings import api_key_from_env
from .backend import BackendError, LocalBackend, RemoteBackend
from .batch import batch_items, export_csv, metrics_text, missing_text, run_batch

FILETYPES = [("Images", "*.jpg *.jpeg *.png *.bmp *.gif *.webp *.tif *.tiff *.heic *.heif *.avif"),
             ("All files", "*")]
VIEW = (460, 345)  # the image preview at its largest (4:3, as dermoscopic images are)
VIEW_MIN = (320, 240)  # and at its smallest, in a narrow window
BAR = (100, 260, 200)  # a probability bar's shortest, longest, and the length the preview leaves room for
MALIGNANT = " (malignant)"
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
        self._names_measured: tuple | None = None  # (the font and names measured, the widest's width)
        self._build()
        if self.backend is None:
            self._connect(model, api)
        else:
            self.source_label.config(text=getattr(self.backend, "description", "backend given"))
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
        # Sized to the window (_fit_single): the preview shrinks from VIEW to VIEW_MIN, the bars from their
        # longest to their shortest, then the class names wrap, so that at the smallest window (minsize)
        # every part of a result is on show whole, and at 1920x1080 nothing is stretched.
        self.left = left = ttk.Frame(self.single)
        left.pack(side="left", fill="y")
        bar = ttk.Frame(left)
        bar.pack(fill="x")
        self.open_button = ttk.Button(bar, text="Open image…", command=self.choose_image)
        self.open_button.grid(row=0, column=0, rowspan=2, sticky="w")
        self.heat = tk.BooleanVar(value=False)
        ttk.Checkbutton(bar, text="Heat-map (Grad-CAM)", variable=self.heat,
                        command=self._show_image).grid(row=0, column=1, sticky="w", padx=(8, 0))
        # The four flips averaged: the same answer however the picture is held (a single view changes
        # its answer for about 1 image in 10 when flipped, experiments/measure_flip_consistency.py).
        self.tta = tk.BooleanVar(value=False)
        ttk.Checkbutton(bar, text="Steadier (4 views, slower)", variable=self.tta).grid(row=1, column=1, sticky="w",
                                                                                         padx=(8, 0))
        # an empty image of the preview's size: a Label's size is then in pixels, not (as for text) in characters
        self.preview = VIEW
        self._blank = tk.PhotoImage(master=self.root, width=VIEW[0], height=VIEW[1])  # this window's, not the first's
        self.canvas = tk.Label(left, image=self._blank, text="no image", compound="center", bg="#ddd")
        self.canvas.pack(pady=6)
        self.meta_label = ttk.Label(left, text="", wraplength=VIEW[0])  # a long file name wraps under the image
        self.meta_label.pack(anchor="w")
        # Optional patient details: any left at "not given" is marginalised by the model, not guessed.
        patient = ttk.LabelFrame(left, text="Patient details (optional)", padding=4)
        patient.pack(fill="x", pady=4)
        self.age_var, self.sex_var, self.site_var = tk.StringVar(), tk.StringVar(value=NOT_GIVEN), \
            tk.StringVar(value=NOT_GIVEN)
        ttk.Label(patient, text="Age").grid(row=0, column=0, sticky="w")
        self.age_entry = ttk.Entry(patient, textvariable=self.age_var, width=5)
        self.age_entry.grid(row=0, column=1, sticky="w", padx=(2, 8))
        ttk.Label(patient, text="Sex").grid(row=0, column=2, sticky="w")
        self.sex_box = ttk.Combobox(patient, textvariable=self.sex_var, values=(NOT_GIVEN, "female", "male"),
                                    state="readonly", width=9)
        self.sex_box.grid(row=0, column=3, sticky="w", padx=2)
        ttk.Label(patient, text="Site").grid(row=1, column=0, sticky="w", pady=(4, 0))
        self.site_box = ttk.Combobox(patient, textvariable=self.site_var, values=(NOT_GIVEN,) + SITES,
                                     state="readonly", width=15)
        self.site_box.grid(row=1, column=1, columnspan=3, sticky="w", padx=(2, 0), pady=(4, 0))
        self.spinner = ttk.Progressbar(left, mode="determinate", length=VIEW_MIN[0])  # empty until it works
        self.spinner.pack(fill="x", padx=20, pady=4)

        self.result_panel = right = ttk.Frame(self.single, padding=(16, 0, 0, 0))
        right.pack(side="left", fill="both", expand=True)
        self.top_label = ttk.Label(right, text="Open a dermoscopic image to classify it.",
                                   font=("TkDefaultFont", 15, "bold"), wraplength=VIEW[0], justify="left")
        self.top_label.pack(anchor="w")
        self.ood_label = tk.Label(right, text="", fg="#fff", bg="#616161", wraplength=640, justify="left")
        self.risk_label = tk.Label(right, text="", fg="#fff", bg="#999", font=("TkDefaultFont", 12, "bold"),
                                   padx=6, pady=3)
        self.risk_label.pack(anchor="w", pady=(8, 2))
        self.recommendation = ttk.Label(right, text="", wraplength=640, justify="left")
        self.recommendation.pack(anchor="w")
        # Scores and bars: hidden for an image that is not assessed (no diagnosis is shown for it).
        self.assessment = ttk.Frame(right)
        self.assessment.pack(anchor="w", fill="x")
        self.malignancy_label = ttk.Label(self.assessment, text="", justify="left")
        self.malignancy_label.pack(anchor="w", pady=(10, 0))
        self.mal_canvas = tk.Canvas(self.assessment, width=400, height=18, bg="#e6e9ee", highlightthickness=0)
        self.mal_canvas.pack(anchor="w")
        self._malignancy: dict | None = None
        ttk.Label(self.assessment, text="Class probabilities").pack(anchor="w", pady=(12, 2))
        self.bars: dict[str, tuple[ttk.Label, ttk.Progressbar, ttk.Label]] = {}
        grid = ttk.Frame(self.assessment)
        grid.pack(anchor="w", fill="x")
        for i, code in enumerate(CODES):
            name = ttk.Label(grid, text=code, justify="left")
            pb = ttk.Progressbar(grid, maximum=100, length=BAR[1])
            val = ttk.Label(grid, text="", width=8, anchor="e")  # "100.0 %" and a little room
            name.grid(row=i, column=0, sticky="w")
            pb.grid(row=i, column=1, padx=4, pady=2, sticky="w")
            val.grid(row=i, column=2, sticky="e")
            self.bars[code] = (name, pb, val)
        self._clear_result(self.top_label.cget("text"))  # no empty bars or risk before the first image
        self.single.bind("<Configure>", lambda e: self._fit_single(), add="+")
        right.bind("<Configure>", lambda e: self._fit_result(), add="+")

    def _names_width(self) -> int:
        """The widest class name as shown, unwrapped: the shipped names until a result brings its own. Measured
        again only when the names or the font change: every resize asks for it."""
        font = _style_font(self.root, "TLabel")
        shown = [name.cget("text") for name, _, _ in self.bars.values()]
        key = (tuple(sorted(font.actual().items())), *shown)
        if self._names_measured is None or self._names_measured[0] != key:
            usual = [n + (MALIGNANT if c in MALIGNANT_CODES else "") for c, n in zip(CODES, NAMES)]
            self._names_measured = (key, max(font.measure(t) for t in shown + usual))
        return self._names_measured[1]

    def _fit_single(self):
        """The preview's size from the room the tab has: the results beside it get the class names unwrapped
        and bars of BAR[2] first; the preview takes the rest, between VIEW_MIN and VIEW, and what the
        window's height leaves it."""
        width, height = self.single.winfo_width() - 16, self.single.winfo_height() - 16  # the tab's padding
        if width < 100 or height < 100:  # not laid out yet
            return
        value = self.bars[CODES[0]][2].winfo_reqwidth()
        results = 16 + self._names_width() + 8 + BAR[2] + value
        others = self.left.winfo_reqheight() - self.canvas.winfo_reqheight()  # the controls above and below it
        w = min(width - results, VIEW[0], int((height - others) * VIEW[0] / VIEW[1]))
        w = max(w, VIEW_MIN[0])
        size = (w, round(w * VIEW[1] / VIEW[0]))
        if size != self.preview:
            self.preview = size
            self._blank.configure(width=size[0], height=size[1])
            self.meta_label.config(wraplength=size[0])
            self._show_image()

    def _fit_result(self):
        """Text wrapped, bars and the malignancy scale sized to the result panel's width, so none is cut off."""
        inner = self.result_panel.winfo_width() - 16  # its left padding
        if inner < 100:  # not laid out yet
            return
        for label in (self.top_label, self.recommendation, self.malignancy_label):
            label.config(wraplength=inner - 8)
        self.ood_label.config(wraplength=inner - 28)  # its padx and border
        value = self.bars[CODES[0]][2].winfo_reqwidth()
        room = inner - value - 8 - 4  # the bar's padx, and a margin
        names = self._names_width()
        if room - names >= BAR[0]:
            length, wrap = min(room - names, BAR[1]), 0
        else:  # the names wrap, the longest onto two lines at the smallest window
            length, wrap = BAR[0], max(120, room - BAR[0])
        for name, pb, _ in self.bars.values():
            name.config(wraplength=wrap)
            pb.config(length=length)
        scale = max(120, min(400, inner - 4))
        if int(self.mal_canvas.cget("width")) != scale:
            self.mal_canvas.config(width=scale)
            self._draw_malignancy()

    def _draw_malignancy(self):
        c, m = self.mal_canvas, self._malignancy
        c.delete("all")
        if not m:
            return
        w = int(c.cget("width"))
        c.create_rectangle(0, 0, w * m["probability"], 18, fill="#c62828", width=0)
        x = min(w * m["threshold"], w - 1)
        c.create_line(x, 0, x, 18, width=2)

    def _build_batch(self):
        # two rows, the paths' entries taking what the buttons leave: in one row the buttons at its end
        # (Start among them) were pushed out of a window narrower than about 1200 pixels
        bar = ttk.Frame(self.batch)
        bar.pack(fill="x")
        bar.columnconfigure(1, weight=1)
        self.folder_var = tk.StringVar()
        self.labels_var = tk.StringVar()
        ttk.Button(bar, text="Folder…", command=lambda: self.folder_var.set(filedialog.askdirectory() or
                                                                             self.folder_var.get())
                   ).grid(row=0, column=0, sticky="ew")
        ttk.Entry(bar, textvariable=self.folder_var, width=30).grid(row=0, column=1, sticky="ew", padx=4)
        ttk.Button(bar, text="Labels CSV (optional)…", command=lambda: self.labels_var.set(
            filedialog.askopenfilename(filetypes=[("CSV", "*.csv")]) or self.labels_var.get())
                   ).grid(row=1, column=0, sticky="ew", pady=(4, 0))
        ttk.Entry(bar, textvariable=self.labels_var, width=30).grid(row=1, column=1, sticky="ew", padx=4, pady=(4, 0))
        actions = ttk.Frame(bar)
        actions.grid(row=0, column=2, sticky="e")
        self.start_button = ttk.Button(actions, text="Start", command=self.start_batch)
        self.start_button.pack(side="left")
        self.cancel_button = ttk.Button(actions, text="Cancel", command=self.cancel.set, state="disabled")
        self.cancel_button.pack(side="left", padx=4)
        ttk.Button(actions, text="Export CSV…", command=self.export).pack(side="left")
        self.batch_progress = ttk.Progressbar(self.batch, maximum=100)
        self.batch_progress.pack(fill="x", pady=6)
        self.batch_body = body = ttk.Frame(self.batch)
        body.pack(fill="both", expand=True)
        cols = ("file", "true", "prediction", "confidence", "malignancy", "risk", "metadata_used")
        self.tree = ttk.Treeview(body, columns=cols, show="headings", height=8)
        heading = _style_font(self.root, "Heading")
        for c in cols:
            self.tree.heading(c, text=c, command=lambda c=c: self.sort_by(c))
            self.tree.column(c, width=max(150 if c == "file" else 90, heading.measure(c) + 16), anchor="w")
        self.tree_scroll = ttk.Scrollbar(body, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=self.tree_scroll.set)
        # TkFixedFont by name: the columns of the per-class table and the confusion matrix line up
        self.metrics_box = tk.Text(body, width=54, height=10, font="TkFixedFont", wrap="word")  # metrics_text: 51
        self.metrics_scroll = ttk.Scrollbar(body, orient="vertical", command=self.metrics_box.yview)
        self.metrics_box.configure(yscrollcommand=self.metrics_scroll.set)
        self._batch_wide: bool | None = None
        self._arrange_batch(wide=True)
        body.bind("<Configure>", lambda e: self._arrange_batch(), add="+")
        self._sort_desc = False

    def _arrange_batch(self, wide: bool | None = None):
        """The metrics beside the table where both fit whole, below it otherwise (a narrower window cut the
        metrics off mid-number, or the table's right-hand columns)."""
        if wide is None:
            width = self.batch_body.winfo_width()
            if width < 100:  # not laid out yet
                return
            parts = (self.tree, self.tree_scroll, self.metrics_box, self.metrics_scroll)
            wide = width >= sum(w.winfo_reqwidth() for w in parts) + 8
        if wide == self._batch_wide:
            return
        self._batch_wide = wide
        body = self.batch_body
        for w in body.grid_slaves():
            w.grid_forget()
        self.tree.grid(row=0, column=0, sticky="nsew")
        self.tree_scroll.grid(row=0, column=1, sticky="ns")
        if wide:
            self.metrics_box.grid(row=0, column=2, sticky="nsew", padx=(8, 0))
            self.metrics_scroll.grid(row=0, column=3, sticky="ns")
            weights = {"rows": (1, 0), "columns": (1, 0, 0, 0)}
        else:
            self.metrics_box.grid(row=1, column=0, sticky="nsew", pady=(8, 0))
            self.metrics_scroll.grid(row=1, column=1, sticky="ns", pady=(8, 0))
            weights = {"rows": (3, 2), "columns": (1, 0, 0, 0)}
        for i, wt in enumerate(weights["rows"]):
            body.rowconfigure(i, weight=wt)
        for i, wt in enumerate(weights["columns"]):
            body.columnconfigure(i, weight=wt)

    # ---- plumbing ------------------------------------------------------------------------
    def _connect(self, model, api):
        try:
            # the key from the environment, as the server reads it: a key on a command line is seen by every user
            key = api_key_from_env() if api is not None else None
            # `--api ''` is a URL the user got wrong, not a request for local mode
            self.backend = RemoteBackend(api, api_key=key) if api is not None else LocalBackend(model)
            self.source_label.config(text=self.backend.description)
        except Exception as e:  # BackendError, a key no header can carry (ValueError), anything: shown, no crash
            msg = str(e) if isinstance(e, (BackendError, ValueError)) else f"cannot start: {e} ({type(e).__name__})"
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
            with open_image(path, at_least=max(VIEW)) as meta:  # only its size and format: closed at once
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
        self.spinner.config(mode="indeterminate")
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
        self.spinner.config(mode="determinate", value=0)
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
        self.risk_label.pack_forget()
        self.recommendation.config(text="")
        self.ood_label.pack_forget()
        self.assessment.pack_forget()

    def _on_error(self, msg: str):
        if self.busy:  # a single image failed: its panel says so rather than staying at "classifying"
            self._clear_result("No result (see the message below)")
        self.busy = False
        self.spinner.stop()
        self.spinner.config(mode="determinate", value=0)
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
        img.thumbnail(self.preview)
        self._photo = ImageTk.PhotoImage(img, master=self.root)
        self.canvas.config(image=self._photo, text="", width=self.preview[0], height=self.preview[1])

    def show_result(self, r: dict):
        top, q, risk = r["prediction"], r["quality"], r["risk"]
        self.risk_label.config(text=f"Risk: {risk['level']}", bg=COLOURS[risk["level"]])
        self.risk_label.pack(anchor="w", pady=(8, 2), before=self.recommendation)
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
            name.config(text=names.get(code, code) + (MALIGNANT if code in MALIGNANT_CODES else ""))
            pb.config(value=100 * p)
            val.config(text=f"{100 * p:.1f} %")
        suffix = "" if top["confident"] else "  (uncertain: below 50\u00a0%)"  # no line break before the %
        if top.get("most_probable", top["code"]) != top["code"]:
            suffix += f"\n(chosen over the more probable {names.get(top['most_probable'])}: rarer diagnoses are " \
                      "weighted up in close calls)"
        self.top_label.config(text=f"{top['predicted_class']}: {100 * top['confidence']:.1f}\u00a0%{suffix}")
        m = r["malignancy"]
        used = bool((r.get("metadata") or {}).get("used"))
        self.malignancy_label.config(text=f"Malignancy score {100 * m['probability']:.1f} % ({m['label']}; "
                                          f"threshold {100 * m['threshold']:.1f} %)\n"
                                          + ("patient details used" if used else "image only (no patient details used)"))
        self._malignancy = m
        self._draw_malignancy()
        self._fit_single()  # names from the answer (a server's model may name its classes otherwise)
        self._fit_result()
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
        if res.notes:  # images left out or listed twice, the labels' warnings: each in the panel
            status += f"; {len(res.notes)} note(s) in the panel"
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


def _style_font(root, style: str) -> tkfont.Font:
    """The font a ttk style draws its text in, of this window (a process may hold several)."""
    name = ttk.Style(root).lookup(style, "font") or "TkDefaultFont"
    try:
        return tkfont.nametofont(name, root=root)
    except tk.TclError:  # a description such as "Helvetica 10", not a named font
        return tkfont.Font(root=root, font=name)


def _wrap_to_width(frame, *labels):
    """Keep the labels' wraplength at the frame's current width, so their text wraps instead of being cut off."""
    frame.bind("<Configure>", lambda e: [w.config(wraplength=max(200, e.width - 48)) for w in labels], add="+")


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
