"""`mnistopt search --storage postgresql://...` against a real, throwaway PostgreSQL server.

The server is a fresh cluster in a temp directory (initdb + pg_ctl, trust auth, loopback only,
a free port), run as the `postgres` user when the tests run as root (PostgreSQL refuses root).
`.ci/run` installs Debian's postgresql; where it cannot start, the test skips saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optuna", reason="needs the search extra (optuna)")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL URL on a server started for this test, stopped and deleted after it."""
    pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg 3 (the search extra)")
    initdb, pg_ctl, psql = (_pg_bin(n) for n in ("initdb", "pg_ctl", "psql"))
    if not (initdb and pg_ctl and psql):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="mnistopt-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if not runuser:
            shutil.rmtree(root)
            pytest.skip("running as root and runuser is missing")
        os.chmod(root, 0o755)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    r = run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start")
    if r.returncode:
        log = (root / "log").read_text() if (root / "log").exists() else r.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {log.strip().splitlines()[-1:]}")
    try:
        r = run(psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE mnistopt")
        assert r.returncode == 0, r.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/mnistopt"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_search_on_a_postgresql_server(postgres, mnist, tmp_path):
    import optuna

    npz = tmp_path / "small.npz"
    np.savez(npz, x_train=mnist.x_train[:2000], y_train=mnist.y_train[:2000],
             x_test=mnist.x_test[:1000], y_test=mnist.y_test[:1000])
    cmd = [sys.executable, "-m", "mnistopt", "search", "--target", "mcu:m4-64k", "--data", str(npz),
           "--out", str(tmp_path / "s"), "--epochs", "1", "--train-images", "1000", "--val-images", "1000",
           "--batch-size", "32", "--trials", "2", "--workers", "2", "--storage", postgres, "--study", "pg",
           "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = optuna.load_study(study_name="pg", storage=postgres).trials
    assert len(trials) >= 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers through the server
    assert not (tmp_path / "s" / "study.db").exists()  # nothing went to the default SQLite file
