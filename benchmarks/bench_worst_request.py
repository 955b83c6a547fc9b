"""The worst request the defaults allow: proxy CPU seconds, peak memory and upstream bytes of one request.

``smoothguard serve`` with its default settings (N=11, ``n_samples`` overridable within 3..16, at most 8 media per
request, 25 MP per image, 32 MP per request, a 32 MiB body, ``--image-resize auto``), in front of an upstream in
this script that records the length of every request body and the size of every image in it and answers a fixed
chat completion after 10 ms. One request at a time, each to a fresh proxy (started, warmed up with a small guarded
request, then measured), so that no case inherits another's memory. Per request: the proxy process's CPU seconds
(user + system, psutil), its peak RSS above its RSS just before the request (``VmHWM`` after ``clear_refs``
reset it; a thread sampling ``VmRSS`` every 10 ms as a check), the bytes sent upstream (all bodies, and the median
body of a noisy copy) and the wall time.

Which request is worst. The client wants a small request and a lot of work for the proxy. The work grows with the
pixels the noise is drawn on (N-1 noisy copies, each written as lossless PNG and sent), not with the bytes
uploaded: a flat or smoothly graded PNG is ~780x smaller than its pixels (15 KB for 2800x1428), while every noisy
copy is close to incompressible. So: 8 images (``max_media_items``) of smooth gradients totalling just under 32 MP
(``max_request_pixels``), ``"smoothguard": {"n_samples": 16}`` (the highest override allowed), and a model name for
which the images are not downscaled: a Qwen2-VL / Qwen2.5-VL name keeps up to 12.8 MP per image (sides rounded to
multiples of 28; ours are multiples of 28 already, so nothing is resized). A 25 MP image would be brought down to
12.8 MP, so it is cheaper. Audio is no worse: a WAV does not compress, so a clip is at most the body's 32 MiB and
each copy is about that size. Text is copied into every candidate as it is, so filling the rest of the 32 MiB
body with text adds ~32 MB per candidate for little CPU: case ``A8+text``.

Cases:

* ``A8``: model ``Qwen/Qwen2.5-VL-7B-Instruct``, N=16, 8 images of 2800x1428 (31.99 MP; no resize).
* ``A3``: the same pixels as 3 images: 2 of 3584x3584 (Qwen's 12.8 MP maximum) and one of 2800x2240 (31.96 MP).
* ``A8+text``: ``A8`` plus a text part that fills the body to just under 32 MiB.
* ``A8 N=11``: ``A8`` without the override (the default N, what ``--limit n_samples=3:11`` leaves a client).
* ``B8``: ``A8``'s request with model ``gpt-4o``: 8 images of 3264x1224 (31.96 MP), each downscaled to OpenAI's
  2048x768 before the noise.
* ``C9``: 9 images of 2800x1428: refused (``max_media_items``), counted before anything is decoded.
* ``C33MP``: 7 images of 2800x1428 and one of 2800x1500 (32.19 MP): the 8th is refused (``max_request_pixels``),
  after the first 7 (28 MP) were decoded: the dearest refusal.
* ``Clie``: a 30000x30000 PNG header in a few hundred bytes: refused from the header (``max_image_pixels``).
* ``C413``: a 33 MiB body: refused while it arrives (``--max-body-bytes``).

Expectation written before measuring (2 shared cores; from ``bench_real_sizes.py``: ~51 ms of proxy CPU per MP of
noisy copy, ~2.7 bytes per pixel upstream for a noisy PNG as base64):

* ``A8``: the 8 decoded originals are 32 MP x 12 bytes (float32 RGB) = 384 MB. The guard draws all 15 noisy copies
  before any is encoded (15 x 384 MB = 5.8 GB of float32), then the proxy encodes all 16 bodies before sending
  the first (15 x ~85 MB = 1.3 GB). Peak RSS increase ~6-8 GB. Upstream ~1.3 GB (~85 MB per noisy copy; candidate
  0 is the client's 0.2 MB of PNGs). CPU: 15 x 32 MP = 480 MP of copies, ~25-45 s; wall ~20-40 s.
* ``A3``: as ``A8`` within run-to-run noise (same pixels).
* ``A8+text``: ``A8`` + ~16 x 32 MB = ~0.5 GB more upstream and in memory, a second or two more CPU.
* ``A8 N=11``: 10/15 of ``A8``: ~0.9 GB upstream, ~4-5 GB peak, ~17-30 s CPU.
* ``B8``: decoding 32 MP and resizing it (~1-2 s), then 15 copies of 8 x 2048x768 (12.6 MP, 151 MB of float32
  each: 2.3 GB): upstream ~0.5 GB (~34 MB per copy), peak ~3-3.5 GB, CPU ~8-12 s.
* ``C9``, ``Clie``, ``C413``: 400 / 400 / 413 in milliseconds of CPU, no memory to speak of.
* ``C33MP``: 400 after decoding 28 MP: ~0.5-1 s CPU, ~340 MB peak.

Run: ``python benchmarks/bench_worst_request.py [--cases A8 B8 ...]`` (about 3 minutes on 2 cores; the ``A``
cases need ~5 GB of free memory). Measured figures: docs/serving.md, "The worst request the defaults allow".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing as mp
import os
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_upstream import HttpUpstream, serve

MB = 1e6
MIB = 1024 * 1024
QWEN, GPT = "Qwen/Qwen2.5-VL-7B-Instruct", "gpt-4o"


# -- the images -------------------------------------------------------------------------------------------------


def gradient_png(width: int, height: int, k: int = 0) -> bytes:
    """A smooth horizontal gradient (every row the same, mid-range values: no clipping under the noise) as PNG:
    ~780x smaller than its pixels."""
    ramp = np.linspace(64.0, 192.0, width, dtype=np.float32)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for c, scale in enumerate((1.0, 0.8 - 0.02 * k, 0.6 + 0.03 * k)):
        pixels[..., c] = np.clip(ramp * scale + 20 * c, 0, 255).astype(np.uint8)[None, :]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def lying_png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` and whose data is one short row: a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 300, 9))
            + chunk(b"IEND", b""))


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


@dataclass
class Case:
    name: str
    model: str
    sizes: list[tuple[int, int]]
    n_samples: int | None = 16
    expect: int = 200
    text_fill: bool = False
    raw_images: list[bytes] = field(default_factory=list)  # used instead of ``sizes`` when given
    body_bytes: int = 0  # > 0: a body of about this size (random data URL), for the 413 case

    def body(self) -> bytes:
        if self.body_bytes:
            blob = base64.b64encode(os.urandom(self.body_bytes * 3 // 4)).decode("ascii")
            parts: list[dict[str, Any]] = [{"type": "image_url",
                                            "image_url": {"url": "data:image/png;base64," + blob}}]
        else:
            raws = self.raw_images or [gradient_png(w, h, k) for k, (w, h) in enumerate(self.sizes)]
            parts = [{"type": "image_url", "image_url": {"url": data_url(raw)}} for raw in raws]
        parts.insert(0, {"type": "text", "text": "Describe every image."})
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": parts}]}
        if self.n_samples is not None:
            body["smoothguard"] = {"n_samples": self.n_samples}
        raw = json.dumps(body).encode()
        if self.text_fill:  # fill the body up to just under the 32 MiB limit with plain text
            room = 32 * MIB - len(raw) - 4096
            parts.insert(1, {"type": "text", "text": "lorem ipsum " * (room // 12)})
            raw = json.dumps(body).encode()
        return raw

    def pixels(self) -> int:
        return sum(w * h for w, h in self.sizes)


def cases() -> dict[str, Case]:
    a8 = [(2800, 1428)] * 8
    return {c.name: c for c in [
        Case("A8", QWEN, a8),
        Case("A3", QWEN, [(3584, 3584), (3584, 3584), (2800, 2240)]),
        Case("A8+text", QWEN, a8, text_fill=True),
        Case("A8 N=11", QWEN, a8, n_samples=None),
        Case("B8", GPT, [(3264, 1224)] * 8),
        Case("C9", QWEN, [(2800, 1428)] * 9, expect=400),
        Case("C33MP", QWEN, [(2800, 1428)] * 7 + [(2800, 1500)], expect=400),
        Case("Clie", QWEN, [(30000, 30000)], expect=400, raw_images=[lying_png(30000, 30000)]),
        Case("C413", QWEN, [], expect=413, body_bytes=33 * MIB),
    ]}


# -- the upstream -----------------------------------------------------------------------------------------------


_IMAGE = re.compile(rb";base64,")
_ANSWER = json.dumps({
    "id": "chatcmpl-worst", "object": "chat.completion", "created": 1, "model": "worst",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Several smooth colour gradients."}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}).encode()


class _Recorder(HttpUpstream):
    """The upstream: records each POST body's length and the (format, width, height) of every data-URL image in
    it, answers a fixed completion after ``latency`` seconds."""

    latency = 0.01
    bodies: list[list[Any]] = []  # noqa: RUF012 (one process, one list)

    async def respond(self, request_line: str, body: bytearray) -> None:
        if request_line.startswith("GET") and "/bodies" in request_line:
            payload = json.dumps(_Recorder.bodies).encode()
            _Recorder.bodies.clear()
        elif request_line.startswith("POST"):
            _Recorder.bodies.append([len(body), [_image_size(body, m.end()) for m in _IMAGE.finditer(body)]])
            del body
            await asyncio.sleep(self.latency)
            payload = _ANSWER
        else:
            payload = json.dumps({"object": "list", "data": [{"id": "worst", "object": "model"}]}).encode()
        self.reply(payload)


def _image_size(body: bytearray, at: int) -> list[Any]:
    head = base64.b64decode(bytes(body[at:at + 32]))
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ["png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")]
    return ["other", 0, 0]


def run_recorder(port: int) -> None:
    serve(_Recorder, port)


# -- measuring the proxy ----------------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    """The highest ``VmRSS`` of ``pid`` seen, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, _status_kb(self.pid, "VmRSS"))
            except OSError:
                return
            self.done.wait(0.01)


def measure(case: Case, upstream_url: str) -> dict[str, Any]:
    import httpx
    from bench_real_sizes import wait_health
    from bench_serve_load import _cpu, _process, free_port, png_url

    body = case.body()
    port = free_port()
    proxy = subprocess.Popen([sys.executable, __file__, "--serve", "--upstream", upstream_url, "--port", str(port),
                              "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=600, trust_env=False)
    try:
        wait_health(base + "/health")
        small = {"type": "image_url", "image_url": {"url": png_url(0.5, 64)}}
        warm = {"model": case.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe every image."}, small]}]}
        if client.post(base + "/v1/chat/completions", json=warm).status_code != 200:
            raise RuntimeError("the warm-up request failed")
        client.get(upstream_url + "/bodies")
        time.sleep(0.5)
        process = _process(proxy.pid)
        rss_before = _status_kb(proxy.pid, "VmRSS")
        with open(f"/proc/{proxy.pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        sampler = RssSampler(proxy.pid)
        sampler.start()
        cpu_before = _cpu(process)
        start = time.perf_counter()
        response = client.post(base + "/v1/chat/completions", content=body,
                               headers={"content-type": "application/json"})
        wall = time.perf_counter() - start
        cpu = _cpu(process) - cpu_before
        hwm = _status_kb(proxy.pid, "VmHWM")
        sampler.done.set()
        sampler.join()
        bodies = client.get(upstream_url + "/bodies").json()
    finally:
        client.close()
        proxy.terminate()
        proxy.wait(30)
    try:
        error = response.json().get("error", {}).get("code", "") if response.status_code != 200 else ""
    except ValueError:
        error = response.text[:60]
    if response.status_code != case.expect:
        print(f"!! {case.name}: HTTP {response.status_code}, expected {case.expect}: {response.text[:300]}")
    return {"case": case, "status": response.status_code, "error": error, "client_body": len(body), "wall": wall,
            "cpu": cpu, "rss_before": rss_before, "hwm": hwm - rss_before, "sampled": sampler.peak - rss_before,
            "bodies": bodies}


def report(rows: list[dict[str, Any]]) -> None:
    header = (f"{'case':<9} {'model':<8} {'N':>2} {'images':<26} {'MP':>6} {'body MB':>8} {'HTTP':<16} "
              f"{'copies':<26} {'MB/copy up':>10} {'MB up':>7} {'CPU s':>6} {'peak MB':>8} {'sampled':>8} "
              f"{'RSS0 MB':>7} {'wall s':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        case: Case = r["case"]
        bodies = sorted(r["bodies"], key=lambda b: b[0])
        noisy = bodies[1:] if len(bodies) > 1 else bodies
        per_copy = statistics.median(b[0] for b in noisy) / MB if noisy else 0.0
        total = sum(b[0] for b in bodies) / MB
        copies = ""
        if noisy and noisy[-1][1]:
            shapes = sorted({f"{w}x{h}" for _, w, h in noisy[-1][1]})
            copies = f"{len(noisy[-1][1])}x " + "/".join(shapes)
        n = "" if case.expect != 200 else str(case.n_samples or 11)
        images = ("random 33 MiB" if case.body_bytes else
                  ", ".join(f"{k}x {w}x{h}" for (w, h), k in _counted(case.sizes)))
        status = f"{r['status']} {r['error']}".strip()
        model = "qwen2.5" if case.model == QWEN else case.model
        print(f"{case.name:<9} {model:<8} {n:>2} {images:<26} {case.pixels() / MB:>6.2f} "
              f"{r['client_body'] / MB:>8.3f} {status:<16} {copies:<26} {per_copy:>10.2f} {total:>7.1f} "
              f"{r['cpu']:>6.2f} {r['hwm'] / MB:>8.0f} {r['sampled'] / MB:>8.0f} {r['rss_before'] / MB:>7.0f} "
              f"{r['wall']:>6.2f}")
    print("body MB: the client's request body; copies: images in the largest upstream body; MB/copy up: median "
          "upstream body of a noisy copy (all but the smallest body, candidate 0); MB up: every upstream body of the "
          "request; CPU s: user + system seconds of the proxy process; peak MB: VmHWM after the request minus VmRSS "
          "before it (clear_refs reset); sampled: the highest VmRSS sampled every 10 ms, minus the same; RSS0: VmRSS "
          "before the request (after the warm-up)")


def _counted(sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], int]]:
    out: list[tuple[tuple[int, int], int]] = []
    for size in sizes:
        if out and out[-1][0] == size:
            out[-1] = (size, out[-1][1] + 1)
        else:
            out.append((size, 1))
    return out


def main() -> None:
    from bench_serve_load import free_port

    table = cases()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(table), choices=list(table))
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at start; "
          f"numpy {np.__version__}; smoothguard serve with its defaults, a fresh proxy per case")
    port = free_port()
    upstream = mp.get_context("spawn").Process(target=run_recorder, args=(port,), daemon=True)
    upstream.start()
    rows = []
    try:
        for name in args.cases:
            start = time.perf_counter()
            rows.append(measure(table[name], f"http://127.0.0.1:{port}/v1"))
            r = rows[-1]
            print(f"# {name}: HTTP {r['status']}, {r['cpu']:.2f} s CPU, {r['wall']:.2f} s wall "
                  f"({time.perf_counter() - start:.0f} s with the proxy's start), load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    finally:
        upstream.terminate()
        upstream.join(10)
    print()
    report(rows)
    print(f"\n# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        from bench_serve_load import run_proxy

        run_proxy(sys.argv[2:])
    else:
        main()
