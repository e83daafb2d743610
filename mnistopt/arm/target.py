"""The ``arm`` benchmark target: run exported artifacts on aarch64 and check them against x86.

Three ways to an ARM CPU behind one `ArmTarget` (the contract: mnistopt.targets.base):

* native: this host is aarch64; the worker runs here.
* remote: ``arm:ssh://user@host[:port]``; the worker runs on the device (remote.py).
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError
from ..targets.base import Item, Settings, Target, make_record, unsupported

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
    ssh_options: list[str] = field(default_factory=list)  # extra ssh/scp arguments (-i KEY, -o ...)
    keep: bool = False                 # leave the device's work directory for inspection
    limit: int | None = None           # first N test images only

    @property
    def mode(self) -> str:
        if self.target and self.emulate:
            raise ConfigError("an ssh:// target and emulation exclude each other: pick one")
        if self.target:
            mode = "remote"
        elif self.emulate or platform.machine() not in ("aarch64", "arm64"):
            mode = "emulated"
        else:
            mode = "native"
        if self.cpu and mode != "emulated":
            raise ConfigError(f"the cpu option (--cpu, arm:emulate:CPU) picks the emulated core; "
                              f"on a {mode} ARM CPU the CPU is what it is (drop it, or emulate)")
        return mode


def options_from_env(env=None) -> ArmOptions:
    """ArmOptions from MNISTOPT_ARM_* (and MNISTOPT_SSH_OPTIONS), for CI and scripts."""
    env = os.environ if env is None else env
    get = lambda name: env.get(name) or None  # noqa: E731
    return ArmOptions(
        target=get("MNISTOPT_ARM_TARGET"),
        emulate=(get("MNISTOPT_ARM_EMULATE") or "").lower() in ("1", "true", "yes"),
        cpu=get("MNISTOPT_ARM_CPU"),
        cache=Path(env["MNISTOPT_ARM_CACHE"]).expanduser() if get("MNISTOPT_ARM_CACHE") else None,
        remote_python=get("MNISTOPT_ARM_REMOTE_PYTHON"),
        remote_venv=get("MNISTOPT_ARM_REMOTE_VENV"),
        ssh_options=(get("MNISTOPT_SSH_OPTIONS") or "").split(),
    )


def tolerance_for(quant: str | None):
    from ..parity import Tolerance

    return Tolerance(**(FP32_TOLERANCE if quant in (None, "fp32") else QUANT_TOLERANCE))


def worker_args(settings: Settings, mode: str) -> list[str]:
    """The worker's options from the common settings, scaled down under emulation."""
    sizes = list(settings.batch_sizes)
    warmup, iters, budget = settings.warmup, settings.iters, float(settings.budget_s)
    if mode == "emulated":
        sizes = [min(sizes)]
        warmup, iters = min(warmup, EMULATED_WARMUP), min(iters, EMULATED_ITERS)
        budget = min(budget, EMULATED_BUDGET_S)
    args = ["--batch-sizes", ",".join(map(str, sizes)), "--warmup", str(warmup),
            "--iters", str(iters), "--budget", str(budget)]
    if settings.threads:
        args += ["--threads", str(settings.threads)]
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


def run_arm(paths: list[Path], settings: Settings, arm: ArmOptions, say=None,
            advance=None) -> dict:
    """Run the worker on ARM over `paths`; returns {"mode", "info", "result", "logits": {i: array}}.

    `result` is the worker's JSON (schema mnistopt.bench.worker/1); results are in `paths` order.
    """
    import numpy as np

    from ..targets.items import write_test_npz

    mode = arm.mode
    say = say or (lambda m: print(m, file=sys.stderr))
    advance = advance or (lambda n=1, info="": None)
    args = worker_args(settings, mode)
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
            cmd_tail = ["-m", "mnistopt.targets.worker", "--data", str(data), "--out",
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

    from ..data import load_mnist
    from ..targets.worker import Artifact

    m = load_mnist()
    return Artifact(path, threads).logits(m.x_test), np.asarray(m.y_test)


class ArmTarget(Target):
    name = "arm"
    summary = "an aarch64 CPU: this host, a device over SSH, or qemu (latency not representative)"
    options_type = ArmOptions
    spec_usage = "ssh://user@host[:port] (a device), emulate or emulate:CPU (qemu -cpu CPU)"

    @classmethod
    def default_options(cls) -> ArmOptions:
        return options_from_env()

    @classmethod
    def parse_arg(cls, arg: str, options: ArmOptions) -> ArmOptions:
        if arg.startswith("ssh://"):
            return replace(options, target=arg, emulate=False)
        kind, _, cpu = arg.partition(":")
        if kind == "emulate":
            return replace(options, target=None, emulate=True, cpu=cpu or options.cpu)
        raise ConfigError(f"--device arm:{arg}: use arm:{cls.spec_usage}")

    def check(self) -> None:
        self.options.mode  # noqa: B018  (conflicting options raise ConfigError here)
        if self.options.target:
            from .remote import parse_target

            parse_target(self.options.target)
        if self.options.limit is not None and self.options.limit < 1:
            raise ConfigError(f"limit must be >= 1, not {self.options.limit}")

    def run(self, items: list[Item], settings: Settings) -> list[dict]:
        """Records with `arm` (how it ran) and, off an ARM host, `parity` against this host."""
        from ..progress import progress_bar

        arm = self.options
        mode = arm.mode
        artifacts = [(i, it) for i, it in enumerate(items) if it.kind == "artifact"]
        records: dict[int, dict] = {}
        for i, it in enumerate(items):
            if it.kind != "artifact":
                records[i] = unsupported(it, "native framework models do not run on the ARM "
                                         "target; benchmark their exported .onnx/.tflite files",
                                         self.name, mode)
        if artifacts:
            with progress_bar(f"bench (arm, {mode})", len(artifacts), settings.progress) as advance:
                got = run_arm([it.path for _, it in artifacts], settings, arm, advance=advance)
            for k, (i, it) in enumerate(artifacts):
                records[i] = self._record(it, got, k, settings)
        return [records[i] for i in range(len(items))]

    def _record(self, it: Item, got: dict, k: int, settings: Settings) -> dict:
        from ..parity import compare, summary

        mode, env = got["mode"], got["result"].get("environment", {})
        res = dict(got["result"]["results"][k])
        res.pop("artifact", None)
        rec = make_record(it, res, self.name, mode)
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
        if k in got["logits"] and platform.machine() not in ("aarch64", "arm64"):
            ref, labels = reference_logits(it.path, settings.threads)
            arm_logits = got["logits"][k]
            if self.options.limit:
                ref, labels = ref[:len(arm_logits)], labels[:len(arm_logits)]
            par = compare(ref, arm_logits, labels, tolerance_for(it.quant))
            par["reference"] = f"{platform.machine()} (this host)"
            rec["parity"] = par
            if not par["passed"]:
                print(f"ARM parity FAILED for {it.id}: {'; '.join(par['failures'])} "
                      f"({summary(par)})", file=sys.stderr)
        return rec

    def failures(self, records: list[dict]) -> list[str]:
        """Models that did not run, and those outside their parity bounds against this host."""
        out = super().failures(records)
        out += [f"{r['id']}: ARM parity outside its bounds: {'; '.join(r['parity']['failures'])}"
                for r in records if not r.get("error") and (r.get("parity") or {}).get("passed") is False]
        return out
