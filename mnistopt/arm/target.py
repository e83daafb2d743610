"""The ``arm`` benchmark target: run exported artifacts on aarch64 and check them against x86.

Three ways to an ARM CPU behind one function, `run(items, options)` (see bench/targets.py):

* native: this host is aarch64; the worker runs here.
* remote: ``--target ssh://user@host[:port]``; the worker runs on the device (remote.py).
* emulated: qemu-aarch64 with a Debian arm64 sysroot (setup.py, emulated.py). Accuracy and
  parity are the real aarch64 kernels' results; latency is the emulator's, not a device's.

Every record gets ``arm`` (how it ran) and, where this host is not ARM, ``parity``: the same
artifact's logits on this host against the ARM ones (mnistopt.parity), with the bounds below.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

# What running on ARM instead of x86 may change. fp32 kernels differ only in summation order
# and FMA use; quantized kernels may round differently (u8/s8 paths, requantization).
FP32_TOLERANCE = dict(rel=1e-5)
QUANT_TOLERANCE = dict(agreement=0.999)

# Under emulation a call is 20-100x slower than on the device and not representative anyway:
# time few calls at the smallest batch only, so that the accuracy pass is most of the wall time.
# (qemu runs float SIMD through soft-float helpers: the `seed` CNN takes ~0.1 s per image in
# fp32 against ~0.02 s in int8 on a 2-core x86 host; a batch-256 latency call alone is ~30 s.)
EMULATED_WARMUP, EMULATED_ITERS, EMULATED_BUDGET_S = 1, 10, 1.0

MODES = ("native", "remote", "emulated")


@dataclass
class ArmOptions:
    target: str | None = None          # ssh://user@host[:port]
    emulate: bool = False              # force qemu even on an aarch64 host
    cpu: str | None = None             # qemu -cpu (emulated only)
    cache: Path | None = None          # emulation cache [~/.cache/mnistopt/arm]
    remote_python: str | None = None   # interpreter on the device that has mnistopt[runtime]
    remote_venv: str | None = None     # venv to create/use on the device [~/.cache/mnistopt/arm-venv]
    ssh_options: list = field(default_factory=list)  # extra ssh/scp arguments (-i KEY, -o ...)
    keep: bool = False                 # leave the device's work directory for inspection
    limit: int | None = None           # first N test images only

    @property
    def mode(self) -> str:
        if self.target and self.emulate:
            raise ConfigError("--target and --emulate exclude each other: pick one")
        if self.target:
            mode = "remote"
        elif self.emulate or platform.machine() not in ("aarch64", "arm64"):
            mode = "emulated"
        else:
            mode = "native"
        if self.cpu and mode != "emulated":
            raise ConfigError(f"--cpu picks the emulated core; on a {mode} ARM CPU the CPU is "
                              "what it is (drop --cpu, or add --emulate)")
        return mode


def arm_options(options) -> ArmOptions:
    """ArmOptions from the bench Options (attributes, if it has them) or the environment."""
    arm = getattr(options, "arm", None)
    if isinstance(arm, ArmOptions):
        return arm

    def pick(*names, env=None):
        for n in names:
            v = getattr(options, n, None)
            if v not in (None, "", [], ()):
                return v
        return os.environ.get(env) if env else None

    ssh = pick("ssh_options", "ssh_option") or os.environ.get("MNISTOPT_SSH_OPTIONS", "")
    emulate = pick("emulate", env="MNISTOPT_ARM_EMULATE")
    return ArmOptions(
        target=pick("target", "arm_target", env="MNISTOPT_ARM_TARGET"),
        emulate=str(emulate).lower() in ("1", "true", "yes") if emulate is not None else False,
        cpu=pick("cpu", "arm_cpu", env="MNISTOPT_ARM_CPU"),
        cache=pick("arm_cache", env="MNISTOPT_ARM_CACHE"),
        remote_python=pick("remote_python", env="MNISTOPT_ARM_REMOTE_PYTHON"),
        remote_venv=pick("remote_venv", env="MNISTOPT_ARM_REMOTE_VENV"),
        ssh_options=ssh.split() if isinstance(ssh, str) else list(ssh),
        keep=bool(pick("keep_remote")),
        limit=pick("limit"),
    )


def tolerance_for(quant: str | None):
    from ..parity import Tolerance

    return Tolerance(**(FP32_TOLERANCE if quant in (None, "fp32") else QUANT_TOLERANCE))


def worker_args(options, mode: str) -> list[str]:
    """The worker's options from the bench's, scaled down under emulation."""
    sizes = list(getattr(options, "batch_sizes", [1, 32, 256]))
    warmup, iters = int(getattr(options, "warmup", 20)), int(getattr(options, "iters", 300))
    budget = float(getattr(options, "budget_s", 3.0))
    if mode == "emulated":
        sizes = [min(sizes)]
        warmup, iters = min(warmup, EMULATED_WARMUP), min(iters, EMULATED_ITERS)
        budget = min(budget, EMULATED_BUDGET_S)
    args = ["--batch-sizes", ",".join(map(str, sizes)), "--warmup", str(warmup),
            "--iters", str(iters), "--budget", str(budget)]
    if getattr(options, "threads", None):
        args += ["--threads", str(options.threads)]
    return args


def staged_names(paths: list[Path]) -> list[str]:
    """Unique file names for the device (two runs may export files of the same name)."""
    return [f"{i:02d}-{Path(p).name}" for i, p in enumerate(paths)]


def sidecars(path: Path, name: str) -> list[tuple[Path, str]]:
    """(sidecar, its name beside `name`) for NAME.json and NAME.onnx.json, whichever exist:
    the runtime reads the model's I/O metadata (int8 scales, layout) from there."""
    path = Path(path)
    pairs = [(path.with_suffix(".json"), Path(name).with_suffix(".json").name),
             (path.with_name(path.name + ".json"), name + ".json")]
    return [(src, dst) for src, dst in pairs if src.is_file()]


def stage(work: Path, paths: list[Path], data: Path) -> Path:
    """What the device gets: art/ (artifacts + sidecars), test.npz, pkg/mnistopt, the wheel."""
    from .remote import build_wheel, stage_package

    st = work / "stage"
    (st / "art").mkdir(parents=True)
    for path, name in zip(paths, staged_names(paths)):
        (st / "art" / name).write_bytes(Path(path).read_bytes())
        for side, side_name in sidecars(path, name):
            (st / "art" / side_name).write_bytes(side.read_bytes())
    os.link(data, st / "test.npz") if data.stat().st_dev == st.stat().st_dev else \
        (st / "test.npz").write_bytes(data.read_bytes())
    pkg = stage_package(st / "pkg")
    build_wheel(pkg, st)
    return st


def _progress_lines(advance):
    """A stderr-line callback advancing the bar at each 'worker: NAME: acc ...' line."""
    pat = re.compile(r"^worker: (.+?): (acc |.*)")

    def on_line(line: str) -> None:
        m = pat.match(line)
        if m:
            advance(1, info=m.group(1))
    return on_line


def _run_local(cmd: list[str], env: dict | None, on_line, timeout: float = 7200) -> int:
    """The worker here (native) or under qemu (emulated); exit 1 = some artifacts failed."""
    from ..errors import DeviceError
    from .remote import _run_streaming

    proc = _run_streaming(cmd, timeout, on_line, env=env)
    if proc.returncode not in (0, 1):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise DeviceError(f"the ARM worker failed (exit {proc.returncode}): {tail}")
    return proc.returncode


def run_arm(paths: list[Path], options, arm: ArmOptions | None = None, say=None,
            advance=None) -> dict:
    """Run the worker on ARM over `paths`; returns {"mode", "info", "result", "logits": {i: array}}.

    `result` is the worker's JSON (schema mnistopt.bench.worker/1); results are in `paths` order.
    """
    import numpy as np

    from ..bench.core import write_test_npz

    arm = arm or arm_options(options)
    mode = arm.mode
    say = say or (lambda m: print(m, file=sys.stderr))
    advance = advance or (lambda n=1, info="": None)
    args = worker_args(options, mode)
    if arm.limit:
        args += ["--limit", str(arm.limit)]
    info: dict = {"mode": mode}
    with tempfile.TemporaryDirectory(prefix="mnistopt-arm-") as tmp:
        work = Path(tmp)
        data = work / "test.npz"
        write_test_npz(data)
        names = staged_names(paths)
        on_line = _progress_lines(advance)
        if mode == "remote":
            from .remote import parse_target, run_worker

            target = parse_target(arm.target)
            st = stage(work, paths, data)
            info.update(target=str(target), **run_worker(
                target, st, args, names, work, python=arm.remote_python, venv=arm.remote_venv,
                ssh_options=arm.ssh_options, keep=arm.keep, on_line=on_line))
            if info.get("machine") not in ("aarch64", "arm64", "armv7l", "armv8l"):
                say(f"note: {target} is {info.get('machine')}, not an ARM CPU; its figures are "
                    "that machine's")
            out = work / "out"
        else:
            out = work / "out"
            cmd_tail = ["-m", "mnistopt.bench.worker", "--data", str(data), "--out",
                        str(out / "result.json"), "--logits-dir", str(out / "logits"), *args]
            art = work / "art"
            art.mkdir()
            for p, name in zip(paths, names):  # unique names, and the sidecar next to each
                os.symlink(Path(p).resolve(), art / name)
                for side, side_name in sidecars(p, name):
                    os.symlink(side.resolve(), art / side_name)
            files = [str(art / n) for n in names]
            if mode == "native":
                _run_local([sys.executable, *cmd_tail, *files], None, on_line)
            else:
                from . import emulated, setup

                cache = setup.ensure(arm.cache, say=say)
                cpu = emulated.check_cpu(cache, arm.cpu or emulated.DEFAULT_CPU)
                from .remote import stage_package

                pkg = stage_package(work / "pkg").parent
                manifest = setup.read_manifest(cache) or {}
                info.update(cpu=cpu, qemu=manifest.get("qemu"), cache=str(cache))
                _run_local(emulated.guest_command(cache, cmd_tail + files, cpu=cpu),
                           emulated.guest_env(cache, [pkg]), on_line)
        result_path = out / "result.json"
        if not result_path.is_file():
            from ..errors import DeviceError

            raise DeviceError(f"the ARM worker ({mode}) wrote no result")
        result = json.loads(result_path.read_text())
        logits = {}
        for i, r in enumerate(result.get("results", [])):
            f = out / "logits" / f"{names[i]}.npy"
            if "error" not in r and f.is_file():
                logits[i] = np.load(f)
    return {"mode": mode, "info": info, "result": result, "logits": logits}


def reference_logits(path: Path, threads=None):
    """The same artifact on this host (x86), through the same worker code."""
    import numpy as np

    from ..bench.worker import Artifact
    from ..data import load_mnist

    m = load_mnist()
    return Artifact(path, threads).logits(m.x_test), np.asarray(m.y_test)


def run(items, options) -> list[dict]:
    """The bench target: records in the bench schema, with `arm` and `parity` added."""
    from ..bench.core import make_record
    from ..parity import compare, summary
    from ..progress import progress_bar

    arm = arm_options(options)
    mode = arm.mode
    artifacts = [(i, it) for i, it in enumerate(items) if it.kind == "artifact"]
    records: dict[int, dict] = {}
    for i, it in enumerate(items):
        if it.kind != "artifact":
            records[i] = make_record(it, {
                "error": "native framework models do not run on the ARM target; benchmark "
                         "their exported .onnx/.tflite files", "error_type": "Unsupported"},
                options, latency_source=mode)
    if artifacts:
        with progress_bar(f"bench (arm, {mode})", len(artifacts),
                          getattr(options, "progress", True)) as advance:
            got = run_arm([it.path for _, it in artifacts], options, arm, advance=advance)
        env = got["result"].get("environment", {})
        host_is_arm = platform.machine() in ("aarch64", "arm64")
        for k, (i, it) in enumerate(artifacts):
            res = dict(got["result"]["results"][k])
            res.pop("artifact", None)
            rec = make_record(it, res, options, latency_source=mode)
            rec["arm"] = {
                **{k2: v for k2, v in got["info"].items() if v is not None},
                "machine": env.get("cpu", {}).get("machine"),
                "cpu_model": env.get("cpu", {}).get("model"),
                "cpu_flags": env.get("cpu", {}).get("flags"),
                "libraries": env.get("libraries"),
                "latency_representative": mode != "emulated",
            }
            if mode == "emulated":
                rec["arm"]["note"] = ("latency measured under qemu emulation: not representative "
                                      "of any device; accuracy and parity are")
            if k in got["logits"] and not host_is_arm:
                ref, labels = reference_logits(it.path, getattr(options, "threads", None))
                arm_logits = got["logits"][k]
                if arm.limit:
                    ref, labels = ref[:len(arm_logits)], labels[:len(arm_logits)]
                par = compare(ref, arm_logits, labels, tolerance_for(it.quant))
                par["reference"] = f"{platform.machine()} (this host)"
                rec["parity"] = par
                if not par["passed"]:
                    print(f"ARM parity FAILED for {it.id}: {'; '.join(par['failures'])} "
                          f"({summary(par)})", file=sys.stderr)
            records[i] = rec
    return [records[i] for i in range(len(items))]
