"""Would int8 static quantisation make the shipped model fast enough on this CPU? (session 4: no)

    .venv/bin/python experiments/int8_probe.py [--model models/dermalens-lite2]

Quantises the bundle's model.onnx with onnxruntime (QDQ, per-channel int8 weights, uint8
activations, 210 training images for calibration) into a temporary folder and prints p50 ms per
image at batch 1 and 16 for fp32 and int8, 2 threads. Prints figures, asserts nothing; the
quantised model is not kept.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from dermalens import DEFAULT_MODEL
from dermalens.cli import DEFAULT_DATA
from dermalens.data import balanced_subset, load_ham10000, select_split
from dermalens.evaluate.run import decode_records
from dermalens.inference.predictor import Predictor


class Batches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, size: int = 8):
        self.x, self.size, self.i = x, size, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += self.size
        return {"image": self.x[self.i - self.size:self.i]}


def p50_ms_per_image(path: Path, x: np.ndarray, n: int, repeat: int = 20) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batch = x[:n]
    session.run(None, {"image": batch})
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        session.run(None, {"image": batch})
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times)) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    a = ap.parse_args()
    predictor = Predictor(a.model)
    calib = balanced_subset(select_split(load_ham10000(a.data), "train"), 210)
    pixels, _, _ = decode_records(predictor, calib, progress=False)
    x = predictor.bundle.spec.normalize(pixels)
    fp32 = Path(a.model) / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(int8), Batches(x), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        for name, path in (("fp32", fp32), ("int8", int8)):
            for n in (1, 16):
                print(f"{name} batch {n:2d}: p50 {p50_ms_per_image(path, x, n):.2f} ms per image")


if __name__ == "__main__":
    main()
