"""The benchmark tools as a user runs them: wrong inputs give a message, and no started server is left running.
No timing is asserted (figures belong to the benchmarks themselves)."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO
from serverutil import free_port, running_server

from dermalens.serve import loadbench


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")  # a zombie has stopped too


def _wait_for(path, timeout=30):
    deadline = time.time() + timeout
    while not (path.exists() and path.read_text()):
        assert time.time() < deadline, f"{path} never written"
        time.sleep(0.1)
    return int(path.read_text())


def test_loadbench_default_image_is_found_from_any_folder(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from pathlib import Path; from dermalens.serve.loadbench import "
                        "DEFAULT_IMAGE; print(Path(DEFAULT_IMAGE).is_file())"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.stdout.strip() == "True", r.stderr


@pytest.mark.parametrize("flag", ["--requests", "--concurrency", "--workers"])
def test_loadbench_refuses_zero(flag, capsys):
    with pytest.raises(SystemExit) as e:
        loadbench.main([flag, "0"])
    assert e.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_loadbench_missing_image_is_a_message(tmp_path):
    with pytest.raises(SystemExit) as e:
        loadbench.main(["--url", f"http://127.0.0.1:{free_port()}", "--image", str(tmp_path / "no.jpg")])
    assert "--image" in str(e.value.code)


def test_loadbench_server_down_is_a_message():
    with pytest.raises(SystemExit) as e:
        loadbench.main(["--url", f"http://127.0.0.1:{free_port()}", "--requests", "2"])
    assert "is a dermalens server running there" in str(e.value.code)


def test_start_server_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            loadbench.start_server([sys.executable, "-c", "pass"], f"http://127.0.0.1:{port}", timeout_s=3)
    assert "already in use" in str(e.value.code)


def test_start_server_says_at_once_why_dermalens_did_not_start(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "dermalens.cli", "serve", "--port", str(port), "--model", str(tmp_path / "nope")]
    t = time.time()
    with pytest.raises(SystemExit) as e:
        loadbench.start_server(cmd, f"http://127.0.0.1:{port}", timeout_s=40)
    assert "model bundle folder not found" in str(e.value.code)
    assert time.time() - t < 40  # it did not wait for the deadline


FAKE_SERVER = """
import http.server, os, sys, time
open(sys.argv[2], "w").write(str(os.getpid()))
if sys.argv[3] == "down":  # a server still starting: nothing answers yet
    time.sleep(120)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

CALLER = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal: a background job inherits it ignored
from dermalens.serve.loadbench import start_server
port, pidfile, health, ready = sys.argv[1:5]
proc = start_server([sys.executable, "-c", {fake!r}, port, pidfile, health], "http://127.0.0.1:" + port, 60)
try:
    open(ready, "w").write("1")
    time.sleep(60)
finally:
    proc.terminate(); proc.wait()
"""


@pytest.mark.parametrize("when, sig", [("starting", signal.SIGINT), ("running", signal.SIGTERM)])
def test_interrupted_benchmark_leaves_no_server_running(tmp_path, when, sig):
    pidfile, ready = tmp_path / "server.pid", tmp_path / "ready"
    health = "down" if when == "starting" else "up"  # "down": the caller is still waiting for /health
    caller = subprocess.Popen([sys.executable, "-c", CALLER.format(fake=FAKE_SERVER), str(free_port()), str(pidfile),
                               health, str(ready)], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        server = _wait_for(pidfile)
        if when == "running":
            _wait_for(ready)
        time.sleep(0.5)
        caller.send_signal(sig)  # to the benchmark only, as `kill` or a job runner sends it
        caller.wait(30)
        deadline = time.time() + 10
        while not _gone(server) and time.time() < deadline:
            time.sleep(0.1)
        alive = not _gone(server)
        if alive:
            os.kill(server, signal.SIGKILL)
        assert not alive, "the started server was left running"
    finally:
        if caller.poll() is None:
            caller.kill()


def test_loadbench_sends_the_api_key(shipped_bundle, monkeypatch, capsys):
    with running_server(shipped_bundle, {"DERMALENS_API_KEY": "s3cret-key"}) as url:
        monkeypatch.setenv("DERMALENS_API_KEY", "s3cret-key")  # as a user who set it for `dermalens serve`
        loadbench.main(["--url", url, "--requests", "2", "--concurrency", "1"])
        assert "'errors': 0" in capsys.readouterr().out
        with pytest.raises(SystemExit) as e:
            loadbench.main(["--url", url, "--requests", "2", "--concurrency", "1", "--api-key", "wrong"])
        assert "401" in str(e.value.code)


def test_loadbench_reads_the_api_key_as_the_server_does(monkeypatch):
    """A secret file's newline is dropped, as the server drops it; sent as read, it broke every request's header."""
    import asyncio
    sent = []

    async def worker(host, port, body, n, latencies, errors, api_key=None):
        sent.append(api_key)
    monkeypatch.setattr(loadbench, "_worker", worker)
    monkeypatch.setenv("DERMALENS_API_KEY", "s3cret-key\n")
    asyncio.run(loadbench._run("http://127.0.0.1:1", b"{}", 1, 1))
    assert sent == ["s3cret-key"]
    monkeypatch.setenv("DERMALENS_API_KEY", "clé")  # a key the server refuses to start with is not sent either
    with pytest.raises(SystemExit, match="DERMALENS_API_KEY"):
        asyncio.run(loadbench._run("http://127.0.0.1:1", b"{}", 1, 1))


@pytest.mark.parametrize("args, says", [(["--concurrency", "0"], "at least 1"), (["--image", "no.jpg"], "--image no.jpg"),
                                        (["--checkpoint", "no-such-run"], "--checkpoint no-such-run")])
def test_bench_compare_checks_its_inputs_before_starting_servers(args, says):
    r = subprocess.run([sys.executable, "benchmarks/compare.py", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr


def test_bench_json_into_a_missing_folder_is_refused_before_the_run(tmp_path, capsys):
    from dermalens import bench
    with pytest.raises(SystemExit) as e:
        bench.main(["--images", str(REPO / "tests" / "fixtures" / "fullres"), "--repeat", "1",
                    "--json", str(tmp_path / "no" / "bench.json")])
    assert "--json" in str(e.value.code) and "bundle load" not in capsys.readouterr().out


def test_bench_names_the_format_and_count_of_the_images_it_timed(tmp_path, capsys):
    from PIL import Image
    from dermalens import bench
    Image.open(REPO / "tests" / "fixtures" / "fullres" / "ISIC_0024311.jpg").save(tmp_path / "lesion.png")
    bench.main(["--images", str(tmp_path), "--repeat", "1"])
    assert "images:  1, the first 600x450 PNG" in capsys.readouterr().out


@pytest.mark.parametrize("script, args", [("budget.py", ["--requests", "0"]), ("budget.py", ["--image", "no.jpg"]),
                                          ("preprocess_options.py", ["--image", "no.jpg"])])
def test_benchmark_scripts_refuse_wrong_inputs_with_a_message(script, args):
    r = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-500:]


def _script(name):
    """A benchmarks/ script as a module, as `python benchmarks/NAME` runs it."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name[:-3]}", REPO / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["budget.py", "compare.py", "preprocess_options.py"])
def test_benchmark_scripts_check_the_image_one_way_before_anything_starts(script, tmp_path):
    """Each script checked --image its own way (compare.py gave the system's words for a missing file; budget.py
    and preprocess_options.py took any file): one check now, one message per mistake."""
    main = _script(script).main
    (tmp_path / "notes.txt").write_text("no image")
    for given, says in [(tmp_path / "no.jpg", "not found"), (tmp_path, "is a folder; give an image file"),
                        (tmp_path / "notes.txt", "cannot be read as an image")]:
        with pytest.raises(SystemExit) as e:
            main(["--image", str(given)])
        assert str(e.value.code).startswith(f"error: --image {given}: {says}"), e.value.code


@pytest.mark.parametrize("mistake", ["missing", "folder", "not an image"])
def test_loadbench_checks_its_image_as_the_benchmark_scripts_do(tmp_path, mistake):
    from dermalens.serve.loadbench import main as loadbench
    path = {"missing": tmp_path / "nope.jpg", "folder": tmp_path, "not an image": tmp_path / "notes.jpg"}[mistake]
    if mistake == "not an image":
        path.write_text("plain text")
    with pytest.raises(SystemExit) as e:
        loadbench(["--image", str(path), "--url", "http://127.0.0.1:9"])
    said = {"missing": "not found", "folder": "is a folder", "not an image": "cannot be read as an image"}[mistake]
    assert f"--image {path}" in str(e.value) and said in str(e.value)
