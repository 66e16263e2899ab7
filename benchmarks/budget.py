"""Where a request's CPU time and the server's memory go: the budget behind issue 19's targets.

    python benchmarks/budget.py [--requests 2000]

Prints, for the 600x450 JPEG that `make bench-load` sends:
1. each step of one prediction on its own (p50 ms, one thread unless said): what a request costs the cores;
2. a real server on loopback at concurrency 16: the server process's CPU time per request and how busy the
   cores were, so the throughput ceiling is cores / (core-ms per request);
3. the resident memory the bundle's compiled graphs hold, loaded as the server loads them and with each
   OpenVINO or allocator setting that might lower it;
4. `dermalens predict` over a folder (HAM10000's 200x150 images): the core-milliseconds per image of the whole
   pipeline (decode, every check, results) against those of its graphs alone on the same views, so the share the
   pipeline's own work takes is seen;
5. each network's graph on one thread, one stream against two side by side: whether the cores slow each other
   down (two threads of one physical core would).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from dermalens import DEFAULT_MODEL
from dermalens.defaults import DEFAULT_DATA
from dermalens.argtypes import positive
from dermalens.bench import _time
from dermalens.paths import image_argument
from dermalens.serve.loadbench import DEFAULT_IMAGE, measure, request_body, start_server


def p50_ms(fn, repeat: int = 200) -> float:
    return _time(fn, repeat)["p50_ms"]  # make bench's timer


def steps(model: str, image: Path) -> dict:
    from dermalens.inference import Predictor
    from dermalens.inference.layout import band_reasons
    from dermalens.inference.ood import exposure_reasons
    from dermalens.preprocess import dark_margins, load_rgb, open_image
    pred = Predictor(model, mode="throughput")  # one thread per graph, as each graph runs beside the others
    b = pred.bundle
    data = image.read_bytes()
    body = request_body(image)
    text = json.loads(body)["image"]
    view = pred.load(data)[None]
    _, pooled, _ = pred.forward(view)
    out = {"JSON parse of the request body": p50_ms(lambda: json.loads(body)),
           "base64 decode": p50_ms(lambda: base64.b64decode(text, validate=True)),
           "JPEG decode": p50_ms(lambda: open_image(data).load()),
           "decode + resize to the bundle's view": p50_ms(lambda: pred.load(data))}
    for m in b.members:  # each graph timed on its input resized beforehand, the resize on its own row
        if m.input_size != b.spec.input_size:
            out[f"resize the view for {m.name}"] = p50_ms(lambda m=m: m.resized(view))
        resized = {"image": m.resized(view)}
        out[f"graph {m.name}"] = p50_ms(lambda m=m, x=resized: m.model.run(x))
    if b.gate is not None:
        g = b.gate
        out["resize the view for the image-type check"] = p50_ms(lambda: g._input(view))
        gate_input = g._input(view)
        out["graph image-type check"] = p50_ms(lambda: g.model.run(gate_input))
    out["exposure checks"] = p50_ms(lambda: exposure_reasons(view[0], pred.exposure_rules))
    out["paper-band check (layout)"] = p50_ms(lambda: band_reasons(view[0], pred.layout_rules))
    decoded = load_rgb(data, at_least=2 * max(b.spec.input_size))  # the frame as the view's decode gives it
    out["dark-margin look (in decode + resize)"] = p50_ms(lambda: dark_margins(decoded))
    out["OOD distance"] = p50_ms(lambda: pred.ood_scores(pooled))
    answer = pred.predict_pixels(view)[0]
    out["answer to JSON"] = p50_ms(lambda: json.dumps(answer.to_dict()))
    return out


def server_cpu(model: str, image: Path, requests: int, concurrency: int = 16) -> dict:
    url, port = "http://127.0.0.1:8771", "8771"
    proc = start_server([sys.executable, "-m", "dermalens.cli", "serve", "--port", port, "--model", model], url)
    try:
        body = request_body(image)
        measure(url, body, 300, concurrency)  # warm-up

        def cpu_s(pid):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        me = resource.getrusage(resource.RUSAGE_SELF)
        s0, c0, t0 = cpu_s(proc.pid), me.ru_utime + me.ru_stime, time.perf_counter()
        res = measure(url, body, requests, concurrency)
        me = resource.getrusage(resource.RUSAGE_SELF)
        server, client, wall = cpu_s(proc.pid) - s0, me.ru_utime + me.ru_stime - c0, time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    cores = len(os.sched_getaffinity(0))
    return {**res, "server core-ms per request": round(1000 * server / requests, 2),
            "client core-ms per request": round(1000 * client / requests, 2),
            "cores busy": f"{100 * (server + client) / (cores * wall):.0f} %",
            "ceiling at this cost, requests/s": round(1000 * cores / (1000 * server / requests), 1)}


def graph_memory(model: str, setting: str) -> float:
    """MB of resident memory the bundle's graphs add once loaded and run (in a fresh process per setting)."""
    code = f"""
import ctypes, gc, numpy as np
from pathlib import Path
def rss():
    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024
import openvino, dermalens.inference.runtime as rt
from dermalens.inference import Predictor
setting = {setting!r}
if setting == 'CPU_RUNTIME_CACHE_CAPACITY=0':
    rt._openvino_core().set_property('CPU', {{'CPU_RUNTIME_CACHE_CAPACITY': 0}})
before = rss()
p = Predictor({model!r})
p.predict_pixels(np.zeros((1, *p.bundle.spec.input_size, 3), np.uint8) + 128)
if setting == 'malloc_trim after loading':
    gc.collect(); ctypes.CDLL('libc.so.6').malloc_trim(0)
print(rss() - before)
"""
    env = dict(os.environ)
    if setting.startswith("MALLOC_ARENA_MAX"):
        env["MALLOC_ARENA_MAX"] = setting.split("=")[1]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return round(float(out.stdout.split()[-1]), 1)


def folder_cpu(model: str, images: list[Path]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from dermalens.inference import Predictor
    from dermalens.inference.pipeline import predict_stream
    pred = Predictor(model, mode="throughput")  # as `dermalens predict` loads it
    b = pred.bundle

    def cpu_s():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    list(predict_stream(pred, images[:40]))  # warm-up
    t, c = time.perf_counter(), cpu_s()
    n = sum(1 for _ in predict_stream(pred, images))
    wall, used = time.perf_counter() - t, cpu_s() - c
    views = np.stack([pred.load(p) for p in images])
    batches = [views[i:i + 4] for i in range(0, len(views), 4)]  # the pipeline's batches, two at a time

    def graphs(v):
        for m in b.members:
            m.run(v)
        if b.gate is not None:
            b.gate.features(v)
    with ThreadPoolExecutor(2) as pool:
        c = cpu_s()
        list(pool.map(graphs, batches))
        alone = cpu_s() - c
    return {"images": n, "images/s (after start-up)": round(n / wall, 1),
            "pipeline core-ms per image": round(1000 * used / n, 2),
            "its graphs alone, core-ms per image": round(1000 * alone / n, 2),
            "cores busy": f"{100 * used / (len(os.sched_getaffinity(0)) * wall):.0f} %"}


def side_by_side(model: str, n: int = 150) -> dict:
    import threading

    import numpy as np
    from dermalens.inference.bundle import read_card
    from dermalens.inference.members import member_entries, open_member
    out = {}
    for entry in member_entries(read_card(model)):
        graphs = [open_member(Path(model), entry, threads=1).model for _ in range(2)]  # as a bundle compiles it
        x = {"image": np.full((1, *entry["input_size"], 3), 128, np.uint8)}
        for g in graphs:
            for _ in range(10):
                g.run(x)

        def loop(g):
            for _ in range(n):
                g.run(x)
        t = time.perf_counter()
        loop(graphs[0])
        one = n / (time.perf_counter() - t)
        threads = [threading.Thread(target=loop, args=(g,)) for g in graphs]
        t = time.perf_counter()
        [th.start() for th in threads]
        [th.join() for th in threads]
        two = 2 * n / (time.perf_counter() - t)
        out[entry["name"]] = f"one stream {one:.0f}/s ({1000 / one:.2f} ms), two side by side {two:.0f}/s: {two / one:.2f}x"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--requests", type=positive, default=2000)
    ap.add_argument("--folder", default=str(Path(DEFAULT_DATA) / "images"), help="images for part 4")
    ap.add_argument("--folder-images", type=positive, default=1000)
    a = ap.parse_args(argv)
    image_argument(a.image)  # else a traceback, or a server started for nothing
    image = Path(a.image)
    print(f"1. one prediction's steps, {image.name} ({len(image.read_bytes()) // 1000} kB), p50 ms:")
    costs = steps(a.model, image)
    for k, v in costs.items():
        print(f"   {k:45s} {v:7.2f}")
    inside = costs["JPEG decode"] + costs["dark-margin look (in decode + resize)"]
    print(f"   {'sum':45s} {sum(costs.values()) - inside:7.2f}  (JPEG decode and the look for dark margins are "
          f"inside the decode + resize row)")
    print(f"2. server at concurrency 16, {a.requests} requests:")
    for k, v in server_cpu(a.model, image, a.requests).items():
        print(f"   {k}: {v}")
    print("3. resident memory the compiled graphs add, MB:")
    for setting in ("as served", "CPU_RUNTIME_CACHE_CAPACITY=0", "malloc_trim after loading", "MALLOC_ARENA_MAX=2"):
        print(f"   {setting:45s} {graph_memory(a.model, setting):7.1f}")
    images = sorted(Path(a.folder).glob("*.jpg"))[:a.folder_images]
    print(f"4. dermalens predict's pipeline over {len(images)} images of {a.folder}:")
    for k, v in (folder_cpu(a.model, images) if images else {"skipped": "no .jpg images there"}).items():
        print(f"   {k}: {v}")
    print("5. each network's graph on one thread, one stream and two side by side, inferences per second:")
    # in a fresh process: the threads of the runtimes loaded above must not share the cores with it
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import budget; "
            f"print(json.dumps(budget.side_by_side({a.model!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for k, v in json.loads(out.stdout.splitlines()[-1]).items():
        print(f"   {k}: {v}")


if __name__ == "__main__":
    main()
