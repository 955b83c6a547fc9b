"""Throughput of ``smoothguard eval --model openai:...`` against a fast local OpenAI-compatible endpoint.

The endpoint is this script's own minimal HTTP server (``http_upstream.py``) in a child process: it answers every
chat completion after ``--latency`` ms with one of three phrasings chosen from a checksum of the request's last
2,000 bytes (so the answers vary with the noise, as a model's do, and the server does no per-byte work). So the
figures are the harness's own ceiling: a real engine (vLLM) adds its generation time per call, and with enough
``--concurrency`` the harness keeps it busy until one of the limits below is reached.

For each image size and concurrency, the harness (an ``EvalRunner`` with an ``EndpointModel``, the code path of
the CLI) answers ``--items`` POPE questions undefended (sigma 0: one call each) and guarded (sigma 0.1, N = 11:
eleven calls each), in a fresh output folder, the embedder loaded first. Only the answering phase is timed (each
answer logged and fsynced as it comes; scoring, the report and its plot happen once per run and are left out).
Printed per run: calls per second and the harness's CPU time per call (this process, user + system, all its
threads; the server's is not counted).

Expectation written before measuring (2 shared cores): an undefended call costs ~1-2 ms of CPU (PNG encoding of
the image, JSON, one HTTP exchange through httpx); a guarded call adds the noisy copy (drawing it and encoding a
noisy PNG: ~0.2 ms at 64 px, ~5-10 ms at 512 px) and 1/11 of the item's embedding + clustering + vote (~20-40 ms
per item on this CPU, so ~2-4 ms per call). So ~4-6 ms of CPU per guarded call at 64 px, i.e. ~200-400 calls/s
on 2 cores at best, and ~10-15 ms at 512 px (~100-150 calls/s); concurrency beyond ~16 should not help once the
CPU is the limit, while with 50 ms of latency throughput should grow with concurrency until then.

Run: ``python benchmarks/bench_eval_endpoint.py [--items 40] [--sizes 64 512] [--concurrency 4 16 64]
[--latency 0 50]`` (about 4 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_upstream import HttpUpstream, serve

PHRASES = ("Yes, there is one in the image.", "Yes.", "No, there is none.")
LATENCY = {"seconds": 0.0}


class FastChat(HttpUpstream):
    async def respond(self, request_line: str, body: bytearray) -> None:
        if LATENCY["seconds"]:
            await asyncio.sleep(LATENCY["seconds"])
        text = PHRASES[zlib.crc32(bytes(body[-2000:])) % len(PHRASES)]
        self.reply(json.dumps({"id": "x", "object": "chat.completion", "model": "fast",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "stop"}]}).encode())


def _serve(port: int, latency: float) -> None:
    LATENCY["seconds"] = latency
    serve(FastChat, port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the fast endpoint did not start")


def measure(base_url: str, data: object, concurrency: int, sigma: float, workdir: Path) -> dict[str, float]:
    """Answer every item of ``data`` in one run (the answering phase only: scoring, the report and its plot are
    once per run and left out)."""
    from smoothguard.eval.endpoint import EndpointModel
    from smoothguard.eval.runner import AnswerLog, EvalRunner, RunSpec

    model = EndpointModel("fast", base_url, concurrency=concurrency)
    runner = EvalRunner(model, data, Path(tempfile.mkdtemp(dir=workdir)), progress=False)
    with AnswerLog(runner.out / "answers.jsonl") as log:
        cpu, wall = time.process_time(), time.perf_counter()
        runner.answer(RunSpec(sigma, 11), log)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        records = list(log.records.values())
    calls = sum(r["calls"] for r in records)
    assert all(r["error"] is None and r["failed_calls"] == 0 for r in records)
    return {"calls": calls, "wall": wall, "rate": calls / wall, "cpu_ms": 1000 * cpu / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--items", type=int, default=40, help="POPE questions per run (default 40)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="image sides in px (default 64 512)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 50.0], help="endpoint ms (default 0 50)")
    args = parser.parse_args()

    from smoothguard import SmoothGuard
    from smoothguard.eval import read_pope, write_pope

    SmoothGuard().warmup()
    workdir = Path(tempfile.mkdtemp(prefix="bench-eval-endpoint-"))
    print(f"{args.items} POPE questions per run; guarded: sigma 0.1, N = 11; CPU = this process, all threads; "
          f"{mp.cpu_count()} CPUs\n")
    print("| image | endpoint latency | concurrency | undefended calls/s | guarded calls/s (N=11) | "
          "undefended CPU ms/call | guarded CPU ms/call | guarded items/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n_images = -(-args.items // 6)
        data = read_pope(write_pope(workdir / f"pope{size}", n_images=n_images, seed=0, size=size)).head(args.items)
        for latency in args.latency:
            port = _free_port()
            server = mp.get_context("spawn").Process(target=_serve, args=(port, latency / 1000), daemon=True)
            server.start()
            try:
                _wait(port)
                base = f"http://127.0.0.1:{port}/v1"
                measure(base, data.head(4), 4, 0.1, workdir)  # warm-up: imports, first connections
                for k in args.concurrency:
                    plain = measure(base, data, k, 0.0, workdir)
                    guarded = measure(base, data, k, 0.1, workdir)
                    print(f"| {size}x{size} | {latency:g} ms | {k} | {plain['rate']:.0f} | {guarded['rate']:.0f} | "
                          f"{plain['cpu_ms']:.2f} | {guarded['cpu_ms']:.2f} | {guarded['rate'] / 11:.1f} |",
                          flush=True)
            finally:
                server.terminate()
                server.join()


if __name__ == "__main__":
    main()
