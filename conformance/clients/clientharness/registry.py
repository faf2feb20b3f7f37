"""Start and stop registry servers on free loopback ports.

Two kinds are supported:

* ``stowage``: our server, ``$STOWAGE_BIN serve --config FILE`` with a TOML
  config naming a filesystem blob store ``root_dir``.  That directory is laid
  out like Distribution's ``<rootdirectory>/docker/registry`` (it holds ``v2/``).
  The caller may pass other store tables instead (``stores_toml``: S3 or split
  layouts, see ``STOWAGE_STORE`` in the suite's conftest).
* ``distribution``: Debian's ``docker-registry`` (CNCF Distribution 2.8) with a
  filesystem ``rootdirectory``; its data lives under ``<root>/docker/registry``.

Processes are only ever stopped through the ``Popen`` handle we created
(SIGTERM, then SIGKILL after a timeout); nothing is killed by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_STOWAGE_BIN = REPO_ROOT / "target" / "release" / "stowage"
DISTRIBUTION_BIN = "docker-registry"

STOWAGE = "stowage"
DISTRIBUTION = "distribution"
KINDS = (STOWAGE, DISTRIBUTION)

# Store layouts for Stowage (STOWAGE_STORE); the same names as conformance/live/matrix.py.
FS_LAYOUT = "fs"
STORE_LAYOUTS = (FS_LAYOUT, "s3", "s3-blobs+fs-meta", "fs-blobs+s3-meta")

START_TIMEOUT = float(os.environ.get("REGISTRY_START_TIMEOUT", "30"))


class RegistryStartError(RuntimeError):
    pass


def kind_under_test() -> str:
    kind = os.environ.get("REGISTRY_UNDER_TEST", STOWAGE).strip().lower()
    if kind not in KINDS:
        raise RegistryStartError(
            f"REGISTRY_UNDER_TEST={kind!r} is not one of {', '.join(KINDS)}"
        )
    return kind


def store_layout() -> str:
    """The Stowage store layout from ``STOWAGE_STORE`` (default ``fs``)."""
    layout = os.environ.get("STOWAGE_STORE", FS_LAYOUT).strip().lower() or FS_LAYOUT
    if layout not in STORE_LAYOUTS:
        raise RegistryStartError(
            f"STOWAGE_STORE={layout!r} is not one of {', '.join(STORE_LAYOUTS)}"
        )
    return layout


def stowage_bin() -> Path:
    """The Stowage binary, or a RegistryStartError explaining how to get one."""
    env = os.environ.get("STOWAGE_BIN")
    path = Path(env) if env else DEFAULT_STOWAGE_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        how = "STOWAGE_BIN" if env else f"default {DEFAULT_STOWAGE_BIN}"
        raise RegistryStartError(
            f"Stowage server binary not found or not executable ({how}: {path}). "
            "Build it with `cargo build --release` at the repo root, or point "
            "STOWAGE_BIN at it."
        )
    return path


def distribution_bin() -> str:
    path = shutil.which(DISTRIBUTION_BIN)
    if not path:
        raise RegistryStartError(
            "Debian's `docker-registry` (CNCF Distribution) is not installed; "
            "run conformance/install-deps.sh"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


@dataclass
class Registry:
    kind: str
    storage: Path  # what the server was given: root_dir / rootdirectory
    workdir: Path  # config and log files live here
    port: int
    proc: subprocess.Popen
    log_path: Path
    _log_file: object = field(repr=False, default=None)
    # Stowage only: the store tables it was started with, if not ``[blob_store.fs]`` on
    # ``storage`` (a restart reuses them, so it comes back on the same buckets).
    stores_toml: str | None = None
    # Stowage over TLS only: the ``requests`` keyword arguments (``verify``, ``cert``) a
    # client needs to be served; the URL is then https.
    tls_client: dict | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "http" if self.tls_client is None else "https"
        return f"{scheme}://{self.host}"

    @property
    def data_root(self) -> Path:
        """The directory that holds ``v2/`` (blobs and repositories)."""
        if self.kind == DISTRIBUTION:
            return self.storage / "docker" / "registry"
        return self.storage

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL if it does not exit in time."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._close_log()

    def kill(self) -> None:
        """Crash: SIGKILL right now and reap."""
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _spawn(kind: str, argv: list[str], storage: Path, workdir: Path, port: int,
           stores_toml: str | None = None, tls_client: dict | None = None) -> Registry:
    log_path = workdir / f"{kind}-{port}.log"
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        start_new_session=True,  # our Ctrl-C doesn't reach it; we stop it by PID
    )
    reg = Registry(kind, storage, workdir, port, proc, log_path, log_file, stores_toml,
                   tls_client)
    try:
        _wait_ready(reg)
    except BaseException:
        reg.stop(timeout=5)
        raise
    return reg


def _wait_ready(reg: Registry) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if not reg.running():
            raise RegistryStartError(
                f"{reg.kind} exited with code {reg.proc.returncode} before it "
                f"answered on {reg.url}/v2/\n--- log ---\n{reg.log_tail()}"
            )
        try:
            r = requests.get(f"{reg.url}/v2/", timeout=2, **(reg.tls_client or {}))
            # 401: serving, and wanting credentials.
            if r.status_code in (200, 401):
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        time.sleep(0.1)
    raise RegistryStartError(
        f"{reg.kind} did not answer 200 on {reg.url}/v2/ within {START_TIMEOUT}s "
        f"(last: {last})\n--- log ---\n{reg.log_tail()}"
    )


def _prepare(storage: Path, workdir: Path, port: int | None, name: str,
             extension: str) -> tuple[Path, int, Path]:
    """Creates ``storage`` and ``workdir``; returns ``storage`` as a Path, the port (a free
    one unless given) and the path of the config file to write in ``workdir``."""
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    return storage, port, workdir / f"{name}-{port}.{extension}"


def start_stowage(root_dir: Path, workdir: Path, port: int | None = None,
                  stores_toml: str | None = None, server_toml: str = "",
                  tls_client: dict | None = None, registry_toml: str = "") -> Registry:
    """Stowage with ``[blob_store.fs] root_dir = root_dir``, or, if ``stores_toml`` is
    given, with those store tables instead (``root_dir`` is then only a scratch
    directory the caller may have pointed filesystem stores into). ``server_toml`` adds
    keys to the ``[server]`` table (and may open ``[server.tls]`` and later tables),
    ``registry_toml`` to the ``[registry]`` table; ``tls_client`` is what ``requests``
    needs to reach it over TLS."""
    binary = stowage_bin()
    root_dir, port, config = _prepare(root_dir, workdir, port, "stowage", "toml")
    stores = stores_toml if stores_toml is not None else (
        "[blob_store.fs]\n"
        f"root_dir = {_toml_str(str(root_dir))}\n"
    )
    config.write_text(
        "[server]\n"
        'bind_address = "127.0.0.1"\n'
        f"port = {port}\n"
        f"{server_toml}\n"
        "[registry]\n"
        f"{registry_toml}\n"
        f"{stores}"
    )
    return _spawn(STOWAGE, [str(binary), "serve", "--config", str(config)],
                  root_dir, workdir, port, stores_toml, tls_client)


def start_distribution(rootdirectory: Path, workdir: Path, port: int | None = None) -> Registry:
    binary = distribution_bin()
    rootdirectory, port, config = _prepare(rootdirectory, workdir, port, "distribution", "yml")
    # JSON is YAML, so json.dumps gives safe quoting for paths.
    config.write_text(
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {json.dumps(str(rootdirectory))}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: {json.dumps(f'127.0.0.1:{port}')}\n"
    )
    return _spawn(DISTRIBUTION, [binary, "serve", str(config)],
                  rootdirectory, workdir, port)


def start_registry(kind: str, storage: Path, workdir: Path, port: int | None = None,
                   stores_toml: str | None = None, server_toml: str = "",
                   tls_client: dict | None = None, registry_toml: str = "") -> Registry:
    """Start a registry of ``kind`` whose storage directory is ``storage``.

    For Stowage ``storage`` is ``root_dir`` (unless ``stores_toml`` replaces the
    store tables); for Distribution it is the ``rootdirectory`` (data under
    ``storage/docker/registry``).
    """
    if kind == STOWAGE:
        return start_stowage(storage, workdir, port, stores_toml, server_toml, tls_client,
                             registry_toml)
    if stores_toml is not None or server_toml or tls_client or registry_toml:
        raise ValueError(f"{kind} has no configurable stores or server settings")
    if kind == DISTRIBUTION:
        return start_distribution(storage, workdir, port)
    raise ValueError(f"unknown registry kind {kind!r}")


def restart(reg: Registry) -> Registry:
    """Start a fresh process of the same kind on the same storage (new port)."""
    if reg.running():
        raise RuntimeError("restart() needs the previous process to be stopped")
    return start_registry(reg.kind, reg.storage, reg.workdir, stores_toml=reg.stores_toml)
