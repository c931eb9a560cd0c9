"""Convert a GGUF checkpoint to an HF safetensors directory (run inside the converter venv).

Usage: python convert_gguf.py <file.gguf> <out_dir>

Kept free of harness imports: it runs under the converter venv's interpreter, not the harness's.

The GGUF's own tokenizer flags (``tokenizer.ggml.add_bos_token`` / ``add_eos_token``) are carried over
(transformers' GGUF loader does not map them: a model whose GGUF says "add BOS" got none, and its greedy
text degenerated), and the saved tokenizer is checked to behave as the GGUF says before the conversion
counts: a mismatch fails it with both sides named. What was carried over is kept in ``gguf_tokenizer.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def gguf_flags(gguf_path: Path) -> dict[str, bool]:
    """The tokenizer flags the GGUF file itself states (absent ones are left to the tokenizer's default)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    out = {}
    for name in ("add_bos_token", "add_eos_token"):
        field = fields.get(f"tokenizer.ggml.{name}")
        if field is not None and field.data:
            out[name] = bool(field.parts[field.data[0]][0])
    return out


def behaviour(tokenizer: Any, text: str = "Hello world") -> dict[str, bool]:
    """Whether encoding actually adds BOS / EOS (the flag attributes do not survive a save; the behaviour does)."""
    ids = tokenizer(text)["input_ids"]
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    return {
        "add_bos_token": bool(ids) and bos is not None and ids[0] == bos,
        "add_eos_token": bool(ids) and eos is not None and ids[-1] == eos,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: convert_gguf.py <file.gguf> <out_dir>", file=sys.stderr)
        return 2
    gguf_path, out_dir = Path(argv[0]), Path(argv[1])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    flags = gguf_flags(gguf_path)
    for flag, value in flags.items():
        setattr(tokenizer, flag, value)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # bfloat16: what vLLM serves it in anyway, at half the disk. The weights are dequantized on
    # load; without this, save_pretrained records a GGUF quantization config vLLM cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    saved = behaviour(AutoTokenizer.from_pretrained(str(out_dir)))
    wrong = {k: (v, saved[k]) for k, v in flags.items() if saved[k] != v}
    if wrong:
        print(
            "converted tokenizer does not behave as the GGUF says: "
            + ", ".join(f"{k}: GGUF {want}, converted {got}" for k, (want, got) in wrong.items()),
            file=sys.stderr,
        )
        return 1
    import json

    (out_dir / "gguf_tokenizer.json").write_text(
        json.dumps({"gguf": flags, "converted": saved}, indent=1) + "\n", encoding="utf-8"
    )
    print(f"converted {gguf_path} -> {out_dir} (tokenizer flags from the GGUF: {flags or 'none stated'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
