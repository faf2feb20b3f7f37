"""The one launcher: child processes on free loopback ports, waited on until they answer, and
stopped through the handle we created (SIGTERM, then SIGKILL after 30 s); nothing is ever
stopped by name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
STOP_TIMEOUT = 30.0


class StartError(RuntimeError):
    """A process that exited, or did not become ready, before it was of use."""


def environment(drop: str = "", **variables: str) -> dict:
    """This process's environment for a server: without the variables whose names start
    with `drop` (when given), plus `variables`."""
    kept = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    return kept | variables


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    """Polls `check()` until it is truthy; an OSError counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def wait_for_log(read, *needles: str, timeout: float = 5.0) -> str:
    """What `read()` returns once it holds every needle (case-insensitive) or `timeout` has
    passed: a server writes its log in batches from a thread of its own, a little later."""
    deadline = time.monotonic() + timeout
    while True:
        logged = read()
        if all(n.lower() in logged.lower() for n in needles) or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


class Process:
    """A child process we started, its output in `log_path`. In a session of its own, so a
    Ctrl-C on the tests does not reach it: it is stopped by its PID only."""

    def __init__(self, argv, log_path: Path, env=None, cwd: Path | None = None):
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Sends `sig`, then SIGKILL if the process has not exited within `timeout`; returns
        its exit status."""
        if self.running():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """A crash: SIGKILL now, no graceful shutdown."""
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def start(argv, log_path: Path, ready, what: str, env=None, cwd: Path | None = None,
          timeout: float = 30.0) -> Process:
    """Starts `argv` and waits until `ready()` is truthy; a process that exits first, or does
    not become ready in time, is stopped and raises with the tail of its log."""
    process = Process(argv, log_path, env, cwd)

    def up() -> bool:
        # A process that exited will not come up: say so now rather than after the timeout.
        if not process.running():
            raise RuntimeError(f"exited with status {process.proc.returncode}")
        return ready()

    try:
        wait_until(up, what, timeout)
    except RuntimeError as e:
        process.stop()
        raise StartError(f"{what}: {e}\n--- log ---\n{process.tail()}") from None
    return process


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
