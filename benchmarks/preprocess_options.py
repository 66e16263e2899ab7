"""Decode + resize options for the serving preprocessing, timed and compared with the one definition.

    python benchmarks/preprocess_options.py [--repeat 30]

For a 200x150 and a 600x450 HAM10000 JPEG, and a 12-megapixel JPEG and PNG (the 600x450 image upscaled),
each option turns the file's bytes into the bundle's uint8 input; the table gives the p50 time and the
largest and mean difference from `PreprocessSpec.to_uint8` (the definition training and serving share).
An option only replaces the definition if it is both faster and identical on the training images.
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from dermalens.argtypes import positive
from dermalens.inference.bundle import read_card
from dermalens.paths import image_argument
from dermalens.preprocess import PreprocessSpec, load_rgb


def options(spec: PreprocessSpec):
    h, w = spec.input_size

    def pillow_full(data):  # no reduced decode
        return np.asarray(spec.resize_image(load_rgb(data)))

    def pillow_reducing_gap(data):  # draft decode as the definition, then Pillow's two-step resize
        img = load_rgb(data, at_least=2 * max(spec.input_size))
        if spec.turns(img.width, img.height):
            img = img.transpose(Image.Transpose.ROTATE_90)
        cw, ch = round(img.width * spec.center_fraction), round(img.height * spec.center_fraction)
        left, top = (img.width - cw) // 2, (img.height - ch) // 2
        return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, (left, top, left + cw, top + ch),
                                     reducing_gap=2.0))

    def opencv(data):  # libjpeg-turbo reduced decode where it applies, INTER_AREA resize
        import cv2
        arr = np.frombuffer(data, np.uint8)
        hdr = cv2.imdecode(arr, cv2.IMREAD_COLOR)  # full decode: the size probe, and the image when not reduced
        flag = cv2.IMREAD_COLOR
        for f, k in ((cv2.IMREAD_REDUCED_COLOR_8, 8), (cv2.IMREAD_REDUCED_COLOR_4, 4), (cv2.IMREAD_REDUCED_COLOR_2, 2)):
            if min(hdr.shape[:2]) // k >= 2 * max(spec.input_size) and data[:2] == b"\xff\xd8":
                flag = f
                break
        img = cv2.imdecode(arr, flag) if flag != cv2.IMREAD_COLOR else hdr
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if spec.turns(img.shape[1], img.shape[0]):
            img = np.rot90(img)
        ih, iw = img.shape[:2]
        cw, ch = round(iw * spec.center_fraction), round(ih * spec.center_fraction)
        left, top = (iw - cw) // 2, (ih - ch) // 2
        return cv2.resize(img[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_AREA)

    return {"definition (Pillow, reduced JPEG decode)": lambda d: spec.to_uint8(d),
            "Pillow full decode": pillow_full, "Pillow reduced decode + reducing_gap": pillow_reducing_gap,
            "OpenCV (reduced decode + INTER_AREA)": opencv}


def images(sample: str) -> dict[str, bytes]:
    big = Image.open(sample).convert("RGB")
    out = {}
    small = io.BytesIO()
    big.resize((200, 150), Image.Resampling.BILINEAR).save(small, "JPEG", quality=90)
    out["200x150 JPEG"] = small.getvalue()
    out["600x450 JPEG"] = open(sample, "rb").read()
    huge = big.resize((4000, 3000), Image.Resampling.BICUBIC)
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        huge.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {"compress_level": 6}))
        out[f"4000x3000 {fmt}"] = buf.getvalue()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/dermalens-lite2")
    ap.add_argument("--image", default="tests/fixtures/fullres/ISIC_0024311.jpg")
    ap.add_argument("--repeat", type=positive, default=30)
    a = ap.parse_args(argv)
    image_argument(a.image)  # before the model is read and anything timed
    spec = PreprocessSpec.from_dict(read_card(a.model)["preprocessing"])
    opts = options(spec)
    print(f"| image | option | p50 ms | max diff | mean diff |\n|---|---|---|---|---|")
    for name, data in images(a.image).items():
        ref = spec.to_uint8(data).astype(int)
        for oname, fn in opts.items():
            out = fn(data)
            times = []
            for _ in range(max(3, a.repeat if "4000" not in name else a.repeat // 5)):
                t = time.perf_counter()
                fn(data)
                times.append(time.perf_counter() - t)
            d = np.abs(out.astype(int) - ref)
            print(f"| {name} | {oname} | {1000 * np.median(times):.2f} | {d.max()} | {d.mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
