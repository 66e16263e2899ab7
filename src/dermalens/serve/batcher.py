"""Dynamic batching: requests that arrive while the model is busy run together.

One thread owns the model. It takes the first waiting request, plus every other request
already queued (up to `max_batch`), and runs them as one batch: on 2 cores a batch of 8
costs far less than 8 single runs. Nothing waits for a batch to fill, so a lone request
is not delayed.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np


class Batcher:
    def __init__(self, predictor, max_batch: int = 16):
        self.predictor, self.max_batch = predictor, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="dermalens-batcher", daemon=True)
        self.thread.start()

    def submit(self, pixels: np.ndarray, tta: bool, explain: bool, size: tuple[int, int] | None = None,
               metadata=None) -> Future:
        """`size`: (width, height) of the image as sent, for the predictor's size check; `metadata`: the
        patient's PatientMetadata or None."""
        fut: Future = Future()
        self.queue.put((pixels, tta, explain, fut, size, metadata))
        return fut

    def _loop(self):
        while True:
            items = [self.queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            for tta in (False, True):
                group = [it for it in items if it[1] == tta]
                if group:
                    self._run(group, tta)

    def _run(self, group, tta: bool):
        try:
            preds = self.predictor.predict_pixels(np.stack([g[0] for g in group]), tta=tta,
                                                  explain=any(g[2] for g in group),
                                                  source_sizes=[g[4] for g in group],
                                                  metadata=[g[5] for g in group])
        except Exception as e:  # hand the failure to every waiting request
            for g in group:
                g[3].set_exception(e)
            return
        for g, p in zip(group, preds):
            if not g[2]:
                p.cam = None
            g[3].set_result(p)
