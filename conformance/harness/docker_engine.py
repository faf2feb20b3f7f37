"""A docker engine of a test's own: its own data root, exec root and socket, no networking of
its own (`--iptables=false --ip6tables=false --bridge=none`), optionally trusting a CA for a
registry host (as an operator sets it up, under /etc/docker/certs.d) and sending Docker Hub
pulls to registry mirrors."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.process import StartError, start


class DockerFailed(AssertionError):
    """A docker command that was to succeed did not."""


class DockerEngine:
    def __init__(self, trust: tuple[str, Path] | None = None, mirrors: tuple[str, ...] = ()):
        """`trust`: (host, CA file); `mirrors`: registry mirror URLs (`--registry-mirror`)."""
        self.dir = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.certs_d = None
        if trust is not None:
            host, ca = trust
            self.certs_d = Path("/etc/docker/certs.d") / host
            self.certs_d.mkdir(parents=True, exist_ok=True)
            shutil.copy(ca, self.certs_d / "ca.crt")
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
                    "DOCKER_CONFIG": str(self.dir / "client")}
        try:
            self.process = start(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--data-root", self.dir / "root", "--exec-root", self.dir / "exec",
                 "--pidfile", self.dir / "docker.pid", "-H", f"unix://{self.socket}",
                 *(f"--registry-mirror={mirror}" for mirror in mirrors)],
                self.dir / "dockerd.log", lambda: self("version", check=False).returncode == 0,
                "dockerd", timeout=60)
        except StartError as e:
            self._remove()
            raise DockerFailed(str(e)) from None

    def __call__(self, *args: str, check: bool = True, stdin: bytes | None = None):
        cp = subprocess.run(["docker", *args], env=self.env, capture_output=True,
                            input=stdin, timeout=180)
        if check and cp.returncode != 0:
            raise DockerFailed(f"docker {' '.join(args)}: {cp.stderr.decode(errors='replace')}")
        return cp

    def out(self, *args: str) -> str:
        return self(*args).stdout.decode().strip()

    def stop(self) -> None:
        self.process.stop()
        self._remove()

    def _remove(self) -> None:
        if self.certs_d is not None:
            shutil.rmtree(self.certs_d, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
