"""Two workers on one study in a real PostgreSQL server; one is killed mid-trial.

The fixture starts a throwaway cluster (initdb in a temporary folder, a free loopback port, run as
the ``postgres`` user because the server refuses root), and removes it afterwards. Where no
PostgreSQL is installed (``scripts/ensure_postgres.sh`` installs Debian's) or no unprivileged user
can run it, the test is skipped and says why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from test_study import check_retried_once, wait_for, worker_command, worker_env

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
HOW = "run scripts/ensure_postgres.sh (as root) to install Debian's postgresql package"


def _binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, wherever Debian or a source build put them."""
    found = shutil.which("initdb")
    candidates = ([str(Path(found).parent)] if found else []) + ["/usr/local/bin"] + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if os.access(Path(folder) / "initdb", os.X_OK) and os.access(Path(folder) / "pg_ctl", os.X_OK):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL to an empty database on a cluster that lives as long as the test."""
    pytest.importorskip("psycopg2", reason=f"psycopg2 is not installed ({HOW}; pip install psycopg2-binary)")
    binaries = _binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL is not installed: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin; {HOW}")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and there is no 'postgres' user to run the server as; {HOW}")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and 'runuser' is missing, so the server cannot drop to 'postgres'")
        prefix = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="prunekit-pg-"))
    data, port = folder / "data", _free_port()
    if prefix:
        os.chown(folder, user.pw_uid, user.pw_gid)

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "30",
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE prunekit_test")
        connection.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/prunekit_test"
    finally:
        subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_one_killed(postgres_url: str, tmp_path: Path) -> None:
    process = subprocess.Popen(worker_command(postgres_url, tmp_path, 8, 2), env=worker_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        victim = wait_for(tmp_path / "hang", process)
        assert victim != process.pid  # NOTE: a worker process, not the parent
        os.kill(victim, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    assert f"(exit code -9; log {tmp_path / 'worker-'}" in stderr
    assert ".log) stopped; the others finished its trials" in stderr
    from prunekit.search.study import open_study

    study = open_study("s", postgres_url, ["minimize"], optuna.samplers.RandomSampler(seed=0), root=tmp_path)
    calls = [int(n) for n in (tmp_path / "calls.log").read_text().split()]
    check_retried_once(study, 8, calls)
    assert {t.state for t in study.get_trials()} <= {TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED}
