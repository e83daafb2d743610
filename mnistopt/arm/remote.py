"""A real ARM device over SSH: copy the artifacts and the runtime-only worker, run, fetch back.

Only the system's ``ssh``/``scp`` are used, with ``BatchMode=yes``: authentication is by key
(agent, ~/.ssh, or ``-i`` in ``--ssh-option``), nothing ever prompts, and no password is stored,
asked for or printed. The user's ~/.ssh/config applies (host aliases, ProxyJump, keys).

On the device: ``python3 -m venv ~/.cache/mnistopt/arm-venv`` created once from a wheel of this
mnistopt with its ``runtime`` extra (or an interpreter the user names), a per-run directory
from ``mktemp -d`` holding the artifacts, the test set and mnistopt's source, removed afterwards.
The source travels with every run so the device always runs the same worker as this host.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, DeviceError

REMOTE_VENV = "$HOME/.cache/mnistopt/arm-venv"
CONNECT_TIMEOUT_S = 15
# The runtime extra, for when mnistopt's own metadata is not installed (a source checkout).
RUNTIME_EXTRA = ("onnxruntime>=1.17", "ai-edge-litert>=1.2")


class RemoteError(DeviceError):
    """The SSH device could not be reached, refused us, or could not run the worker."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"ssh://{self.dest}" + (f":{self.port}" if self.port else "")


def parse_target(url: str) -> SshTarget:
    """``ssh://[user@]host[:port]`` (host may be an alias from ~/.ssh/config)."""
    if not url.startswith("ssh://"):
        raise ConfigError(f"--target must look like ssh://user@host[:port], not '{url}'")
    parts = urlsplit(url)
    if parts.password is not None:
        # Never echo it back: the message names only the host.
        raise ConfigError(f"--target ssh://...@{parts.hostname}: passwords are not accepted; "
                          "set up key authentication (ssh-copy-id) and leave the password out")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--target {url}: the port must be a number 1-65535") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"--target must look like ssh://user@host[:port], not '{url}'")
    return SshTarget(host=parts.hostname, user=parts.username or None, port=port)


class Remote:
    """ssh/scp command lines for one target, and running them with errors that say what failed."""

    def __init__(self, target: SshTarget, ssh_options: list[str] | tuple = ()):
        self.target = target
        self.options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                        "-o", "ServerAliveInterval=15"]
        if target.port:
            self.options += ["-o", f"Port={target.port}"]  # -p for ssh but -P for scp: use -o
        self.options += list(ssh_options)
        self.legacy_scp = False  # scp -O: for devices without an SFTP server (e.g. dropbear)

    def ssh_cmd(self, command: str) -> list[str]:
        return ["ssh", *self.options, "-T", self.target.dest, command]

    def _scp(self) -> list[str]:
        return ["scp", "-q", "-r"] + (["-O"] if self.legacy_scp else []) + self.options

    def upload_cmd(self, sources: list[Path], remote_dir: str) -> list[str]:
        return [*self._scp(), *map(str, sources), f"{self.target.dest}:{remote_dir}/"]

    def download_cmd(self, remote_path: str, local_dir: Path) -> list[str]:
        return [*self._scp(), f"{self.target.dest}:{remote_path}", str(local_dir)]

    def copy(self, make_cmd, what: str, timeout: float) -> None:
        """scp; once ssh itself works, a closed connection means no SFTP server: retry with -O."""
        try:
            self.run(make_cmd(), what, timeout=timeout)
        except RemoteError as exc:
            if self.legacy_scp or "Connection closed" not in str(exc) and "subsystem" not in str(exc):
                raise
            self.legacy_scp = True
            self.run(make_cmd(), what, timeout=timeout)

    def run(self, cmd: list[str], what: str, timeout: float = 600, on_line=None,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run ssh/scp; exit 255 (ssh's own failure) becomes a RemoteError saying which kind."""
        try:
            if on_line is None:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            else:
                proc = _run_streaming(cmd, timeout, on_line)
        except FileNotFoundError:
            raise RemoteError(f"'{cmd[0]}' is not installed: install OpenSSH's client "
                              "(Debian/Ubuntu: sudo apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target}: {what} took more than {timeout:.0f} s") from None
        if proc.returncode == 255 or (cmd[0] == "scp" and proc.returncode != 0):
            raise RemoteError(self._explain(proc.stderr, what))
        if check and proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"
            raise RemoteError(f"{self.target}: {what} failed: {tail}")
        return proc

    def _explain(self, stderr: str, what: str) -> str:
        err = stderr or ""
        last = next((l for l in reversed(err.strip().splitlines()) if l.strip()), "no message")
        t = self.target
        if "Permission denied" in err or "Too many authentication failures" in err:
            return (f"{t}: key authentication failed ({last.strip()}); passwords are never "
                    f"tried: add your public key to {t.user or 'the user'}'s ~/.ssh/authorized_keys "
                    "on the device (ssh-copy-id) or load it with ssh-add")
        if "Host key verification failed" in err or "HOST IDENTIFICATION HAS CHANGED" in err:
            return (f"{t}: the device's host key is unknown or changed; check it and run "
                    f"'ssh {('-p %d ' % t.port) if t.port else ''}{t.dest}' once to accept it")
        if any(s in err for s in ("Could not resolve", "Connection refused", "timed out",
                                  "No route to host", "Network is unreachable", "Connection closed",
                                  "Connection reset")):
            return f"{t}: cannot reach the device ({last.strip()}); check the host, port and network"
        return f"{t}: {what} failed over ssh: {last.strip()}"


def _run_streaming(cmd, timeout, on_line, env=None) -> subprocess.CompletedProcess:
    """Like subprocess.run(capture_output) but hands each stderr line to `on_line` as it comes."""
    import threading

    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    err = []
    try:
        for line in proc.stderr:
            err.append(line)
            on_line(line.rstrip("\n"))
        proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(err))


# --- what travels to the device -------------------------------------------------------------

def stage_package(dest: Path) -> Path:
    """Copy mnistopt's Python source (no caches, no data) to dest/mnistopt; returns it."""
    import mnistopt

    src = Path(mnistopt.__file__).parent
    out = Path(dest) / "mnistopt"
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src)
        if "__pycache__" in rel.parts:
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(f.read_bytes())
    return out


def _requirements() -> list[str]:
    from importlib import metadata

    try:
        reqs = metadata.requires("mnistopt") or []
    except metadata.PackageNotFoundError:
        reqs = []
    if not any("extra ==" in r and "runtime" in r for r in reqs):
        reqs = ["numpy>=1.24"] + [f'{r}; extra == "runtime"' for r in RUNTIME_EXTRA]
    return reqs


def build_wheel(package_dir: Path, out_dir: Path) -> Path:
    """A pure-Python wheel of the staged package (no build backend, no network needed)."""
    import mnistopt

    version = mnistopt.__version__
    name = f"mnistopt-{version}"
    dist = f"{name}.dist-info"
    files: dict[str, bytes] = {}
    for f in sorted(Path(package_dir).rglob("*.py")):
        files["mnistopt/" + f.relative_to(package_dir).as_posix()] = f.read_bytes()
    meta = ["Metadata-Version: 2.1", "Name: mnistopt", f"Version: {version}"]
    extras = sorted({m.group(1) for r in _requirements()
                     for m in [re.search(r"extra == ['\"]([\w-]+)['\"]", r)] if m})
    meta += [f"Provides-Extra: {e}" for e in extras]
    meta += [f"Requires-Dist: {r}" for r in _requirements()]
    files[f"{dist}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{dist}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mnistopt.arm\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = Path(out_dir) / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


# --- the round trip -------------------------------------------------------------------------

PROBE = r"""
printf 'machine=%s\n' "$(uname -m 2>/dev/null)"
printf 'home=%s\n' "$HOME"
if command -v {py} >/dev/null 2>&1; then
  {py} -c 'import sys; print("python=%d.%d" % sys.version_info[:2])' 2>/dev/null || echo python=broken
else
  echo python=none
fi
if [ -x "{venv}/bin/python" ]; then echo venv=yes; else echo venv=no; fi
"""


def check_venv_path(venv: str) -> str:
    """A venv path is expanded by the device's shell inside double quotes ($HOME works)."""
    if not venv or any(c in venv for c in '"`\\\n') or "$(" in venv:
        raise ConfigError(f"--remote-venv '{venv}': use a plain path (quotes, backticks and "
                          "command substitution are not allowed)")
    return venv.rstrip("/")


def probe(remote: Remote, python: str | None, venv: str = REMOTE_VENV) -> dict:
    """machine, python version, whether our venv exists; RemoteError for what is missing."""
    py = shlex.quote(python) if python else "python3"
    proc = remote.run(remote.ssh_cmd(PROBE.format(py=py, venv=venv)), "connecting",
                      timeout=CONNECT_TIMEOUT_S + 30)
    info = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    t = remote.target
    if info.get("python") == "none":
        if python:
            raise RemoteError(f"{t}: the interpreter '{python}' given with --remote-python "
                              "does not exist on the device")
        raise RemoteError(f"{t}: the device has no python3: install Python 3.10 or newer there "
                          "(Debian/Ubuntu: sudo apt-get install python3 python3-venv)")
    if info.get("python") == "broken":
        raise RemoteError(f"{t}: '{python or 'python3'}' on the device does not run")
    version = tuple(int(v) for v in info.get("python", "0.0").split("."))
    if version < (3, 10):
        raise RemoteError(f"{t}: the device's Python is {info.get('python')}; mnistopt's "
                          "runtime needs 3.10 or newer (name one with --remote-python)")
    return info


def _ensure_venv(remote: Remote, run_dir: str, wheel_name: str, venv: str = REMOTE_VENV,
                 on_line=None) -> str:
    """Create the device's venv once (from our wheel with the runtime extra); its python."""
    wheel = f"{run_dir}/{wheel_name}"
    script = (
        f'set -e; V="{venv}"; mkdir -p "$(dirname "$V")"; rm -rf "$V.tmp"; '
        f'python3 -m venv "$V.tmp" || {{ echo "MNISTOPT: no venv module" >&2; exit 3; }}; '
        f'"$V.tmp/bin/python" -m pip install -q --disable-pip-version-check '
        f'{shlex.quote(wheel + "[runtime]")} || {{ echo "MNISTOPT: pip failed" >&2; exit 4; }}; '
        f'rm -rf "$V"; mv "$V.tmp" "$V"')
    proc = remote.run(remote.ssh_cmd(script), "creating the venv", timeout=1800,
                      on_line=on_line, check=False)
    t = remote.target
    if proc.returncode == 3:
        raise RemoteError(f"{t}: the device's python3 cannot create a venv: install python3-venv "
                          "there (Debian/Ubuntu: sudo apt-get install python3-venv), or name an "
                          "interpreter that has mnistopt[runtime] with --remote-python")
    if proc.returncode != 0:
        tail = " | ".join(l for l in proc.stderr.strip().splitlines()[-3:] if "MNISTOPT" not in l)
        raise RemoteError(f"{t}: installing mnistopt[runtime] into {venv} failed ({tail}); "
                          "the device needs access to PyPI, or name a ready interpreter with "
                          "--remote-python")
    return f"{venv}/bin/python"


def run_worker(target: SshTarget, stage: Path, worker_args: list[str], artifacts: list[str],
               out_dir: Path, *, python: str | None = None, venv: str | None = None,
               ssh_options=(), keep: bool = False, on_line=None, timeout: float = 3600) -> dict:
    """Upload `stage` (test.npz, art/, pkg/, the wheel), run the worker, fetch out/ into out_dir.

    Returns {"machine", "python", "interpreter", "run_dir"}; the worker's JSON lands in
    out_dir/out/result.json and its logits in out_dir/out/logits/.
    """
    remote = Remote(target, ssh_options)
    venv = check_venv_path(venv or REMOTE_VENV)
    info = probe(remote, python, venv)
    proc = remote.run(remote.ssh_cmd('mktemp -d "${TMPDIR:-/tmp}/mnistopt-arm.XXXXXX"'),
                      "creating a work directory")
    run_dir = proc.stdout.strip().splitlines()[-1]
    if not run_dir.startswith("/"):
        raise RemoteError(f"{target}: mktemp gave '{run_dir}', not a directory path")
    try:
        remote.copy(lambda: remote.upload_cmd(sorted(stage.iterdir()), run_dir),
                    "copying the artifacts", timeout)
        interpreter = python
        if not interpreter:
            wheel = next(stage.glob("mnistopt-*.whl")).name
            interpreter = (f"{venv}/bin/python" if info.get("venv") == "yes"
                           else _ensure_venv(remote, run_dir, wheel, venv, on_line))
        q = shlex.quote
        # Our venv's path may hold $HOME: expanded by the device's shell, inside double quotes.
        interp = q(interpreter) if python else f'"{interpreter}"'
        cmd = (f"cd {q(run_dir)} && PYTHONPATH={q(run_dir + '/pkg')} PYTHONDONTWRITEBYTECODE=1 "
               f'{interp} -m mnistopt.targets.worker --data test.npz --out out/result.json '
               f"--logits-dir out/logits {' '.join(map(q, worker_args))} "
               f"{' '.join(q('art/' + a) for a in artifacts)}")
        proc = remote.run(remote.ssh_cmd(cmd), "running the benchmark worker", timeout=timeout,
                          on_line=on_line, check=False)
        # Exit 1 means some artifacts failed and the JSON says which; anything else lost it.
        if proc.returncode not in (0, 1):
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            if "No module named" in proc.stderr and ("onnxruntime" in tail or "numpy" in tail):
                tail += " (the interpreter lacks mnistopt's runtime extra: pip install 'mnistopt[runtime]' there)"
            raise RemoteError(f"{target}: the worker failed (exit {proc.returncode}): {tail}")
        remote.copy(lambda: remote.download_cmd(f"{run_dir}/out", out_dir),
                    "fetching the results", timeout)
    finally:
        if not keep:
            try:
                remote.run(remote.ssh_cmd(f"rm -rf {shlex.quote(run_dir)}"), "cleaning up",
                           timeout=60, check=False)
            except RemoteError:
                pass
    return {"machine": info.get("machine"), "python": info.get("python"),
            "interpreter": interpreter, "run_dir": run_dir if keep else None}
