"""Real photo sizes: what drawing the noise at the model's input size (``image_resize``) saves, side by side.

One run measures "before" (``image_resize="none"``: the noise drawn at the source size, every copy full size) and
"after" (the default ``"auto"``, which for an OpenAI-like model is OpenAI's high-detail rule: fit in 2048x2048,
then the shortest side at most 768; a 4032x3024 photo becomes 1024x768), interleaved in every repeat:

1. ``perturb``: ``SmoothGuard(n_samples=11, seed=0, image_resize=X).perturb([media], auto_resize="openai")`` for a
   decoded 4032x3024 JPEG (a photo-like image: smooth gradients, low-frequency shading and sensor-like noise,
   written by PIL at quality 90): median time, peak memory (tracemalloc, which sees numpy's buffers; a separate
   run, since tracing slows Python down), and the 10 noisy copies written with ``Media.to_bytes()`` (PNG): bytes
   and time per copy. Decoding the JPEG (``Media.image``) is its own row: both settings pay it.
2. ``langchain``: ``await ChatSmoothGuard(model=fake, n_samples=11, image_resize=X).ainvoke(...)`` with that JPEG
   as a data URL, against one unguarded ``await fake.ainvoke(...)`` (``bench_langchain.RemoteVLM``: sleeps 200 ms,
   answers one of three phrasings from a checksum of the image; here the checksum reads the image's last 2,000
   characters only, so the fake does no per-byte work a remote model would not do on our CPU). Median of
   ``--rounds`` rounds, the embedder loaded and warmed first and the collector frozen after (``gc.freeze()``), as
   ``bench_langchain.py`` does. Then a breakdown of the local work for "after", step by step on one thread.
3. ``proxy``: two ``smoothguard serve`` processes (``--image-resize none`` and the default), N=11, seed 0, in
   front of an upstream in this script that records every request body's length and the size of its first image
   and answers a fixed chat completion after 50 ms. One guarded request at a time with a 2000x2000 PNG (a smooth
   gradient, ~16 KB like the issue's) and with a 4000x3000 JPEG, as data URLs (about 4 MB at most, under the proxy's
   32 MiB ``--max-body-bytes`` default): upstream bytes per noisy copy (and of candidate 0), the proxy's CPU
   seconds per request (psutil, user + system) and the wall time, medians of ``--proxy-repeats`` requests.

Expectation written before measuring (2 shared cores; from bench_perturb.py's figures: ~190 ms for 11 copies of a
0.8 MP image, ~25 ms per MP to write a noisy PNG, ~2 bytes per pixel for a noisy PNG at the default sigma):

* decoding the 12.2 MP JPEG: ~0.2-0.3 s (PIL decode, then 36.6 M float32 values: 146 MB).
* perturb before: 10 full-size noisy copies, 146 MB of float32 each: ~3-6 s (the issue: 5.6 s), tracemalloc peak
  ~1.5-1.7 GB (the issue: 1.4 GiB), PNG ~24 MB per copy (the issue's 35 MB came from an older PNG writer), ~0.3 s
  to write each.
* perturb after: the resize (the 146 MB float image back to 8 bits, then Lanczos to 1024x768: ~0.2-0.3 s) plus 10
  copies of 1024x768, 9.4 MB of float32 each (2.4 MB is the 8-bit size): ~0.2 s. So ~0.4-0.5 s, 7-12x faster
  (not more: the resize reads all 12 MP). Peak ~200-250 MB (the 146 MB float temporary of the 8-bit conversion
  dominates), ~7x less. PNG ~1.5-1.6 MB per copy, ~20 ms each.
* langchain before: ~5-8 s (the issue: 8.05 s, 39x one call). After: ~0.25 s decode + ~0.25 s resize + ~0.2 s
  noise + 11 PNG writes on 2 threads (~0.15 s) + base64 + the 200 ms call: ~1.0-1.2 s, 5-6x one call. The 1.3x
  target (60 ms of local work) is out of reach on this CPU: decoding the 12 MP JPEG alone takes longer.
* proxy, 2000x2000 PNG -> 768x768: upstream body per noisy copy ~10.7 MB before (the issue: 10.8 MB), ~1.6 MB
  after (base64 of ~1.2 MB); proxy CPU ~2-8 s before (the issue: 7.7 s), ~0.3-0.6 s after.
  4000x3000 JPEG -> 1024x768: ~32 MB per copy before, ~2.1 MB after; CPU ~6-15 s before, ~0.6-1.0 s after.

Run: ``python benchmarks/bench_real_sizes.py [--parts perturb langchain proxy] [--repeats 3] [--rounds 5]
[--proxy-repeats 3]`` (about 3-5 minutes on 2 cores, most of it the "before" rows).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_upstream import HttpUpstream, serve

SETTINGS = ("none", "auto")
MB = 1e6


# -- the images -------------------------------------------------------------------------------------------------


def photo_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth colour gradients, low-frequency shading, and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    shade = (0.5 + 0.25 * np.sin(7.0 * x + 3.0 * y) * np.cos(5.0 * y - 2.0 * x)
             + 0.1 * np.sin(40.0 * x) * np.sin(31.0 * y))
    out = np.empty((height, width, 3), dtype=np.uint8)
    for c, (a, b) in enumerate(((0.35, 0.3), (0.25, 0.4), (0.15, 0.2))):
        channel = (a + b * x * (1 - y) + 0.5 * shade * (0.8 + 0.1 * c)).astype(np.float32)
        channel += rng.normal(0.0, 0.03, (height, width)).astype(np.float32)
        np.clip(channel * 255.0, 0, 255, out=channel)
        out[..., c] = channel
    return out


def jpeg_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_pixels(width, height)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def gradient_png(size: int) -> bytes:
    """A smooth ``size`` x ``size`` gradient as PNG (a small file for its pixel count)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((size, size), 128.0)), axis=-1)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def data_url(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def med(values: list[float]) -> float:
    return statistics.median(values)


# -- 1. perturb -------------------------------------------------------------------------------------------------


def bench_perturb(raw: bytes, repeats: int) -> None:
    from smoothguard import Media, SmoothGuard

    decode: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        media = Media.image(raw)
        decode.append(time.perf_counter() - start)
    guards = {x: SmoothGuard(n_samples=11, seed=0, image_resize=x) for x in SETTINGS}
    times: dict[str, list[float]] = {x: [] for x in SETTINGS}
    encode: dict[str, list[float]] = {x: [] for x in SETTINGS}
    sizes: dict[str, list[int]] = {x: [] for x in SETTINGS}
    shape: dict[str, str] = {}
    first: dict[str, str] = {}
    for _ in range(repeats):
        for x in SETTINGS:
            start = time.perf_counter()
            variants = guards[x].perturb([media], auto_resize="openai")
            times[x].append(time.perf_counter() - start)
            copy = variants[1][0]
            shape[x] = f"{copy.width}x{copy.height}"
            original = variants[0][0]
            first[x] = f"{original.format} {original.width}x{original.height}"
            for variant in variants[1:]:
                start = time.perf_counter()
                png = variant[0].to_bytes()
                encode[x].append(time.perf_counter() - start)
                sizes[x].append(len(png))
            del variants, copy, original, png
            gc.collect()
    peak: dict[str, float] = {}
    for x in SETTINGS:
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        variants = guards[x].perturb([media], auto_resize="openai")
        peak[x] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del variants
        gc.collect()
    data_mb = media.data.nbytes / MB
    print(f"\n## perturb: a {media.width}x{media.height} JPEG (quality 90, {len(raw) / MB:.1f} MB), N=11, seed 0, "
          f"auto_resize='openai'; medians of {repeats}")
    print(f"decode (Media.image, shared by both): {med(decode) * 1000:.0f} ms, {data_mb:.0f} MB of float32")
    header = (f"{'image_resize':<13} {'copies':>10} {'perturb ms':>10} {'peak MB':>8} {'float MB/copy':>13} "
              f"{'PNG MB/copy':>11} {'PNG ms/copy':>11} {'copy 0':>16}")
    print(header)
    print("-" * len(header))
    for x in SETTINGS:
        w, h = map(int, shape[x].split("x"))
        print(f"{x:<13} {shape[x]:>10} {med(times[x]) * 1000:>10.0f} {peak[x] / MB:>8.0f} {w * h * 12 / MB:>13.1f} "
              f"{med(sizes[x]) / MB:>11.2f} {med(encode[x]) * 1000:>11.1f} {first[x]:>16}")
    b, a = SETTINGS
    print(f"before/after: perturb {med(times[b]) / med(times[a]):.1f}x, peak memory {peak[b] / peak[a]:.1f}x, "
          f"PNG bytes {med(sizes[b]) / med(sizes[a]):.1f}x, PNG time {med(encode[b]) / med(encode[a]):.1f}x "
          "(peak: tracemalloc during perturb, the returned copies included; PNG: the 10 noisy copies, one thread)")


# -- 2. LangChain -----------------------------------------------------------------------------------------------


def _image_tail(content: Any) -> str:
    """The last 2,000 characters of the first image's data in a message's content (or its text)."""
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                url = block.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                data = url or block.get("base64") or block.get("url") or block.get("data")
                if isinstance(data, str):
                    return data[-2000:]
    return str(content)[-2000:]


def bench_langchain(raw: bytes, rounds: int) -> None:
    from bench_langchain import PHRASES, RemoteVLM
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from smoothguard_langchain import ChatSmoothGuard

    class PhotoVLM(RemoteVLM):
        """RemoteVLM whose checksum reads only the image's tail (no per-byte work on our CPU)."""

        def _answer(self, messages: list[Any]) -> ChatResult:
            weights = zlib.crc32(_image_tail(messages[-1].content).encode()) % 10
            phrase = PHRASES[0 if weights < 7 else 1 if weights < 9 else 2]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(phrase))])

    def message(url: str) -> list[Any]:
        return [HumanMessage(content=[{"type": "text", "text": "What is in the photo?"},
                                      {"type": "image_url", "image_url": {"url": url}}])]

    model = PhotoVLM(latency=0.2, answers="repeated")
    guards = {x: ChatSmoothGuard(model=model, n_samples=11, image_resize=x) for x in SETTINGS}
    photo = message(data_url(raw, "image/jpeg"))
    small = message(data_url(jpeg_bytes(64, 48), "image/jpeg"))

    async def run() -> tuple[dict[str, list[float]], dict[str, list[dict[str, float]]]]:
        for guard in guards.values():  # load the embedder and see the three phrasings, outside the measurements
            for _ in range(3):
                await guard.ainvoke(small)
        await model.ainvoke(photo)
        gc.freeze()  # as a serving process would: full collections then skip the loaded libraries
        times: dict[str, list[float]] = {name: [] for name in ("unguarded", *SETTINGS)}
        stages: dict[str, list[dict[str, float]]] = {x: [] for x in SETTINGS}
        for _ in range(rounds):
            start = time.perf_counter()
            await model.ainvoke(photo)
            times["unguarded"].append(time.perf_counter() - start)
            for x in SETTINGS:
                start = time.perf_counter()
                reply = await guards[x].ainvoke(photo)
                times[x].append(time.perf_counter() - start)
                stages[x].append(reply.response_metadata["smoothguard"]["timings"])
                del reply
                gc.collect()
        return times, stages

    times, stages = asyncio.run(run())
    base = med(times["unguarded"])
    print(f"\n## LangChain: ChatSmoothGuard(n_samples=11).ainvoke over a 200 ms model, the {len(raw) / MB:.1f} MB "
          f"4032x3024 JPEG as a data URL; medians of {rounds} rounds (target: <= 1.3x one call)")
    header = (f"{'case':<30} {'median ms':>9} {'min ms':>7} {'x call':>7} {'perturb':>8} {'gen+enc':>8} "
              f"{'vote':>6} {'other':>6}")
    print(header)
    print("-" * len(header))
    print(f"{'unguarded ainvoke':<30} {base * 1000:>9.0f} {min(times['unguarded']) * 1000:>7.0f} {1:>6.2f}x")
    for x in SETTINGS:
        total = med(times[x])
        parts = [med([s[k] for s in stages[x]]) for k in ("perturb", "generate", "aggregate")]
        other = total - sum(parts)
        print(f"{'guarded, image_resize=' + x:<30} {total * 1000:>9.0f} {min(times[x]) * 1000:>7.0f} "
              f"{total / base:>6.2f}x {parts[0] * 1000:>8.0f} {parts[1] * 1000:>8.0f} {parts[2] * 1000:>6.0f} "
              f"{other * 1000:>6.0f}")
    print("stages (medians, ms): perturb = resize + noise (core); gen+enc = writing the copies (PNG, base64) + the "
          "11 concurrent calls; vote = embed, cluster, vote; other = the rest (mostly decoding the data URL)")
    breakdown(photo[0].content[1]["image_url"]["url"])


def breakdown(url: str, repeats: int = 3) -> None:
    """The local work of a guarded call under image_resize="auto", step by step (medians). The image is decoded
    straight to the model's size, as the adapters and the proxy do (``Media.image(raw, fit=...)``); the full decode
    and resize they did before is timed alongside, outside the sum."""
    from smoothguard import GuardConfig, Media
    from smoothguard.image_resize import fitter
    from smoothguard.noise import make_variants, pixel_sigma

    config = GuardConfig()
    std = pixel_sigma(config.sigma, config.sigma_space, config.channel_std)
    steps: dict[str, list[float]] = {}
    threads = os.cpu_count() or 1

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        steps.setdefault(name, []).append(time.perf_counter() - start)
        return out

    for _ in range(repeats):
        raw = timed(f"base64-decode the data URL ({len(url) / MB:.1f} MB of text)",
                    lambda: base64.b64decode(url.split(",", 1)[1]))
        resized = timed("decode straight to the model's size (fit)", lambda r=raw: Media.image(r, fit=fitter("openai")))
        timed("(before: full decode to float32, then resize)", lambda r=raw, m=resized: Media.image(r).resized(
            m.width, m.height))
        variants = timed(f"draw the 10 noisy copies (make_variants, {threads} threads)",
                         lambda r=resized: make_variants([r], range(11), entropy=0, image_std=std, audio_std=0.01))
        pngs = timed("write the 11 PNGs, one thread", lambda v=variants: [c[0].to_bytes() for c in v])
        with ThreadPoolExecutor(threads) as pool:
            timed(f"write the 11 PNGs, {threads} threads (as the adapter)",
                  lambda v=variants, p=pool: list(p.map(lambda c: c[0].to_bytes(), v)))
        timed("base64 of the 11 PNGs", lambda p=pngs: [base64.b64encode(b).decode("ascii") for b in p])
        del raw, resized, variants, pngs
    print(f"\nwhere the local time of the 'auto' guarded call goes (each step alone, medians of {repeats}):")
    for name, values in steps.items():
        print(f"  {name:<52} {med(values) * 1000:>7.0f} ms")
    used = [n for n in steps if "one thread" not in n and not n.startswith("(before")]
    print(f"  {'sum (PNGs on ' + str(threads) + ' threads)':<52} {sum(med(steps[n]) for n in used) * 1000:>7.0f} ms")


# -- 3. the proxy -----------------------------------------------------------------------------------------------


class _Recorder(HttpUpstream):
    """The upstream: records each POST body's length and first image, answers after ``latency``."""

    latency = 0.05
    sizes: list[list[Any]] = []  # noqa: RUF012 (one process, one list)

    async def respond(self, request_line: str, body: bytearray) -> None:
        if request_line.startswith("GET") and "/sizes" in request_line:
            reply: Any = list(_Recorder.sizes)
            _Recorder.sizes.clear()
        elif request_line.startswith("POST"):
            _Recorder.sizes.append([len(body), *_first_image(body)])
            await asyncio.sleep(self.latency)
            reply = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "A photo of a smooth colour gradient."}}],
                     "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}
        else:
            reply = {"object": "list", "data": [{"id": "bench", "object": "model"}]}
        self.reply(json.dumps(reply).encode())


def _first_image(body: bytes) -> tuple[str, int, int]:
    """(format, width, height) of the first data-URL image in a request body (PNG sizes read from the header)."""
    at = body.find(b";base64,")
    if at < 0:
        return "none", 0, 0
    head = base64.b64decode(body[at + 8:at + 8 + 32])
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return ("jpeg" if head[:2] == b"\xff\xd8" else "other"), 0, 0


def run_recorder(port: int) -> None:
    serve(_Recorder, port)


def wait_health(url: str, timeout: float = 240.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and response.json().get("ready", True):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def bench_proxy(repeats: int) -> None:
    import httpx
    from bench_serve_load import _cpu, _process, free_port, png_url

    images = {"2000x2000 PNG": data_url(gradient_png(2000), "image/png"),
              "4000x3000 JPEG": data_url(jpeg_bytes(4000, 3000), "image/jpeg")}
    upstream_port = free_port()
    upstream = mp.get_context("spawn").Process(target=run_recorder, args=(upstream_port,), daemon=True)
    upstream.start()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    proxies: dict[str, tuple[subprocess.Popen, str]] = {}
    client = httpx.Client(timeout=600, trust_env=False)
    try:
        for x in SETTINGS:
            port = free_port()
            argv = [sys.executable, __file__, "--serve", "--upstream", upstream_url, "--port", str(port),
                    "--n-samples", "11", "--seed", "0", "--log-level", "warning"]
            if x != "auto":
                argv += ["--image-resize", x]
            proxies[x] = (subprocess.Popen(argv), f"http://127.0.0.1:{port}")
        for _, base in proxies.values():
            wait_health(base + "/health")

        def post(base: str, url: str) -> dict[str, Any]:
            body = {"model": "bench", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in the image?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
            start = time.perf_counter()
            response = client.post(base + "/v1/chat/completions", json=body)
            wall = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            return {"wall": wall, "sizes": client.get(upstream_url + "/sizes").json()}

        for _, base in proxies.values():  # warm-up: connections, threads, the answer in the embedder's cache
            post(base, png_url(0.5, 64))
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {(i, x): [] for i in images for x in SETTINGS}
        for _ in range(repeats):
            for name, url in images.items():
                for x, (proxy, base) in proxies.items():
                    process = _process(proxy.pid)
                    before = _cpu(process)
                    result = post(base, url)
                    result["cpu"] = _cpu(process) - before
                    rows[(name, x)].append(result)
                    gc.collect()
    finally:
        client.close()
        for proxy, _ in proxies.values():
            proxy.terminate()
            proxy.wait(30)
        upstream.terminate()
        upstream.join(10)

    print(f"\n## proxy: smoothguard serve, N=11, seed 0, model 'bench' (auto -> openai), upstream answers after 50 ms;"
          f" one request at a time, medians of {repeats}")
    header = (f"{'upload':<30} {'image_resize':<12} {'copies':>10} {'MB/copy up':>10} {'candidate 0 up':>22} "
              f"{'MB up/req':>9} {'proxy CPU s':>11} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    summary: dict[tuple[str, str], tuple[float, float, float]] = {}
    for name, url in images.items():
        upload = f"{name} ({len(url) / MB:.3f} MB URL)"
        for x in SETTINGS:
            results = rows[(name, x)]
            # candidate 0 (the client's block, or the clean resized original) is the smallest body here
            first, *noisy = sorted(results[-1]["sizes"], key=lambda s: s[0])
            per_copy = med([s[0] for s in noisy]) / MB
            shape = f"{noisy[0][2]}x{noisy[0][3]}" if noisy[0][1] == "png" else noisy[0][1]
            size0 = f"{first[2]}x{first[3]}" if first[1] == "png" else "-"
            copy0 = f"{first[0] / MB:.3f} MB {first[1]} {size0}"
            total = (first[0] + sum(s[0] for s in noisy)) / MB
            cpu, wall = med([r["cpu"] for r in results]), med([r["wall"] for r in results])
            summary[(name, x)] = (per_copy, cpu, wall)
            print(f"{upload:<30} {x:<12} {shape:>10} {per_copy:>10.2f} {copy0:>22} {total:>9.1f} {cpu:>11.2f} "
                  f"{wall:>7.2f}")
    for name in images:
        (pb, cb, wb), (pa, ca, wa) = summary[(name, "none")], summary[(name, "auto")]
        print(f"{name}: before/after bytes per noisy copy {pb / pa:.1f}x, proxy CPU {cb / ca:.1f}x, "
              f"wall {wb / wa:.1f}x")
    print("MB/copy up: upstream request body per noisy copy (median of 10; base64 PNG + JSON); candidate 0 up: the "
          "body of candidate 0; proxy CPU: user + system seconds of the proxy process per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["perturb", "langchain", "proxy"],
                        choices=["perturb", "langchain", "proxy"])
    parser.add_argument("--repeats", type=int, default=3, help="perturb: timed runs per setting")
    parser.add_argument("--rounds", type=int, default=5, help="langchain: timed rounds")
    parser.add_argument("--proxy-repeats", type=int, default=3, help="proxy: requests per upload and setting")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at start; "
          f"numpy {np.__version__}; before = image_resize='none', after = the default 'auto'")
    raw = jpeg_bytes(4032, 3024)
    if "perturb" in args.parts:
        bench_perturb(raw, args.repeats)
    if "langchain" in args.parts:
        bench_langchain(raw, args.rounds)
    if "proxy" in args.parts:
        bench_proxy(args.proxy_repeats)
    print(f"\n# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        from bench_serve_load import run_proxy

        run_proxy(sys.argv[2:])
    else:
        main()
