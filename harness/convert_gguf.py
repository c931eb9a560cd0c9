"""Convert a GGUF checkpoint to an HF safetensors directory (run inside the converter venv).

Usage: python convert_gguf.py <file.gguf> <out_dir>

Kept free of harness imports: it runs under the converter venv's interpreter, not the harness's.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: convert_gguf.py <file.gguf> <out_dir>", file=sys.stderr)
        return 2
    gguf_path, out_dir = Path(argv[0]), Path(argv[1])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # bfloat16: what vLLM serves it in anyway, at half the disk. The weights are dequantized on
    # load; without this, save_pretrained records a GGUF quantization config vLLM cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    print(f"converted {gguf_path} -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
