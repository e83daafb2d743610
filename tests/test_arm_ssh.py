"""The remote ARM path against a real OpenSSH server on loopback (started and stopped here).

The "device" is this host: what is exercised is the real copy / run / fetch round trip over
ssh and scp with key authentication, and the errors for what goes wrong on the way.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")),
    reason="needs OpenSSH's server and client (apt-get install openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _start_sshd(config: Path, port: int) -> subprocess.Popen:
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd expects
    log = config.with_suffix(".log")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {log.read_text()[-300:]}")
            time.sleep(0.1)
    _stop(proc)
    pytest.skip("sshd did not open its port within 10 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1:<free port> with a throwaway host key and user key; killed at teardown."""
    d = tmp_path_factory.mktemp("sshd")
    host_key, user_key, other_key = (_keygen(d / n) for n in ("host_key", "user_key", "other_key"))
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port, nopy_port = _free_port(), _free_port()
    # The second port plays a minimal device image: shell tools on PATH but no python3.
    # (A forced command, because login shells' rc files may rewrite PATH.)
    bin_dir = d / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "uname", "mktemp", "rm", "mkdir", "printf", "cat", "dirname", "mv"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    (d / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1
Port {port}
Port {nopy_port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
Match LocalPort {nopy_port}
    ForceCommand env PATH={bin_dir} /bin/sh -c "$SSH_ORIGINAL_COMMAND"
""")
    key = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {key}\n[127.0.0.1]:{nopy_port} {key}\n")
    proc = _start_sshd(d / "sshd_config", port)
    base = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    user = getpass.getuser()
    yield {"url": f"ssh://{user}@127.0.0.1:{port}", "port": port, "dir": d,
           "nopy_url": f"ssh://{user}@127.0.0.1:{nopy_port}",
           "opts": base + ["-i", str(user_key)], "other_opts": base + ["-i", str(other_key)]}
    _stop(proc)


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parent))
    from runtime_models import onnx_graph

    d = tmp_path_factory.mktemp("art")
    return onnx_graph(d, "lin-torch-fp32.onnx", in_shape=(-1, 1, 28, 28))


def _options():
    from mnistopt.targets import Settings

    return Settings(batch_sizes=[1, 8], warmup=1, iters=5, budget_s=0.5, progress=False)


def test_round_trip_copy_run_fetch(sshd, onnx_artifact):
    from mnistopt.arm.target import ArmOptions, run_arm

    arm = ArmOptions(target=sshd["url"], remote_python=sys.executable,
                     ssh_options=sshd["opts"], limit=300)
    got = run_arm([onnx_artifact], _options(), arm)
    assert got["mode"] == "remote" and got["info"]["machine"] == os.uname().machine
    (res,) = got["result"]["results"]
    assert "error" not in res and res["n_images"] == 300 and set(res["latency"]) == {"1", "8"}
    # The logits came back over scp and match this host's own run of the same file.
    from mnistopt.arm.target import reference_logits

    ref, _ = reference_logits(onnx_artifact)
    np.testing.assert_allclose(got["logits"][0], ref[:300], rtol=1e-6, atol=1e-6)
    assert got["info"]["run_dir"] is None  # removed on the device


def test_bench_records_through_the_registry(sshd, onnx_artifact, monkeypatch):
    """The device spec and KEY=VALUE options as `mnistopt bench` passes them."""
    import shlex

    from mnistopt.bench.api import bench

    rep = bench([onnx_artifact], _options(), device=f"arm:{sshd['url']}",
                set_options=[f"remote_python={sys.executable}", "limit=200",
                             f"ssh_options={shlex.join(sshd['opts'])}"])
    assert rep["failures"] == []
    (rec,) = rep["results"]
    assert rec["latency_source"] == "remote" and rec["arm"]["target"] == sshd["url"]
    assert rec["parity"]["passed"] and rec["parity"]["top1_agreement"] == 1.0


def test_unreachable_host(sshd, onnx_artifact):
    from mnistopt.arm.remote import RemoteError
    from mnistopt.arm.target import ArmOptions, run_arm

    url = f"ssh://nobody@127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(RemoteError, match="cannot reach the device"):
        run_arm([onnx_artifact], _options(), ArmOptions(target=url, ssh_options=sshd["opts"]))


def test_auth_failure_never_prompts(sshd, onnx_artifact):
    from mnistopt.arm.remote import RemoteError
    from mnistopt.arm.target import ArmOptions, run_arm

    with pytest.raises(RemoteError, match="key authentication failed") as e:
        run_arm([onnx_artifact], _options(),
                ArmOptions(target=sshd["url"], ssh_options=sshd["other_opts"]))
    assert "authorized_keys" in str(e.value)


def test_device_without_python3(sshd, onnx_artifact):
    from mnistopt.arm.remote import RemoteError
    from mnistopt.arm.target import ArmOptions, run_arm

    with pytest.raises(RemoteError, match="has no python3"):
        run_arm([onnx_artifact], _options(),
                ArmOptions(target=sshd["nopy_url"], ssh_options=sshd["opts"]))


def test_named_interpreter_missing(sshd, onnx_artifact):
    from mnistopt.arm.remote import RemoteError
    from mnistopt.arm.target import ArmOptions, run_arm

    with pytest.raises(RemoteError, match="does not exist on the device"):
        run_arm([onnx_artifact], _options(), ArmOptions(
            target=sshd["url"], ssh_options=sshd["opts"], remote_python="/nonexistent/python3"))


def test_cli_error_is_one_line(sshd, onnx_artifact):
    url = f"ssh://nobody@127.0.0.1:{_free_port()}"
    r = subprocess.run([sys.executable, "-m", "mnistopt", "arm", "bench", str(onnx_artifact),
                        "--target", url, "--quiet", "--ssh-option=-F", "--ssh-option=/dev/null"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.network
def test_device_venv_created_once_without_sftp(sshd, onnx_artifact, tmp_path):
    """No --remote-python: the device builds a venv from our wheel + PyPI, then reuses it;
    this sshd has no SFTP server (like dropbear), so scp falls back to its legacy protocol."""
    from mnistopt.arm.target import ArmOptions, run_arm

    d = sshd["dir"]
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text((d / "sshd_config").read_text().split("Match")[0]
                      .replace(f"Port {sshd['port']}\n", f"Port {port}\n")
                      .replace("Subsystem sftp internal-sftp\n", "")
                      .replace(f"Port {sshd['nopy_url'].rsplit(':', 1)[1]}\n", ""))
    (d / "known_hosts").write_text((d / "known_hosts").read_text() + (d / "known_hosts")
                                   .read_text().splitlines()[0].replace(str(sshd["port"]), str(port)) + "\n")
    proc = _start_sshd(config, port)
    try:
        url = sshd["url"].replace(f":{sshd['port']}", f":{port}")
        arm = ArmOptions(target=url, ssh_options=sshd["opts"], limit=200,
                         remote_venv=str(tmp_path / "venv"))
        for _ in range(2):
            got = run_arm([onnx_artifact], _options(), arm)
            assert got["info"]["interpreter"] == f"{tmp_path}/venv/bin/python"
            assert got["result"]["results"][0]["n_images"] == 200
    finally:
        _stop(proc)
