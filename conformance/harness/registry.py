"""The registry under test: Stowage started on each store layout, its configuration, and the
handle every suite holds on a running registry (CNCF Distribution's too, see `services`).

Stowage's binary is `STOWAGE_BIN` (default `<repo>/target/release/stowage`), the second
server binary `STOWAGE_SMOL_BIN` (default `<repo>/target/release/stowage-smol`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import requests

from harness.process import REPO, Process, StartError, free_port, start, wait_for_log

STOWAGE = "stowage"
DISTRIBUTION = "distribution"

# Store layouts (STOWAGE_STORE, and the conformance matrix's cells): each store on the
# filesystem or S3, and each split of blobs and metadata.
FS_LAYOUT = "fs"
STORE_LAYOUTS = {
    FS_LAYOUT: ("fs", None),
    "s3": ("s3", None),
    "s3-blobs+fs-meta": ("s3", "fs"),
    "fs-blobs+s3-meta": ("fs", "s3"),
}

START_TIMEOUT = float(os.environ.get("REGISTRY_START_TIMEOUT", "30"))


def toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


def server_binary(env: str = "STOWAGE_BIN", name: str = "stowage") -> str:
    """A server binary: `$env`, or `name` from the release build; raises StartError saying
    how to get one."""
    path = os.environ.get(env) or str(REPO / "target" / "release" / name)
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise StartError(
            f"server binary {path} is missing or not executable: build it with "
            f"`cargo build --release` at the repo root, or point {env} at it"
        )
    return path


def store_layout() -> str:
    """The Stowage store layout from `STOWAGE_STORE` (default `fs`)."""
    layout = os.environ.get("STOWAGE_STORE", FS_LAYOUT).strip().lower() or FS_LAYOUT
    if layout not in STORE_LAYOUTS:
        raise StartError(f"STOWAGE_STORE={layout!r} is not one of {', '.join(STORE_LAYOUTS)}")
    return layout


def fs_toml(table: str, root: Path) -> str:
    return f"[{table}.fs]\nroot_dir = {toml_str(str(root))}\n"


def stores_for(layout: str, work: Path, s3=None) -> str:
    """The store tables of `layout`: filesystem stores under `work`, S3 ones in fresh buckets
    of `s3` (a `services` S3 server)."""
    def store(table: str, kind: str) -> str:
        if kind == "fs":
            return fs_toml(table, work / table)
        return s3.store_toml(table, s3.new_bucket())

    blobs, meta = STORE_LAYOUTS[layout]
    toml = store("blob_store", blobs)
    if meta:
        toml += store("metadata_store", meta)
    return toml


class Registry:
    """A running registry process on 127.0.0.1, stopped by its PID only."""

    def __init__(self, kind: str, process: Process, port: int, storage: Path | None = None,
                 stores_toml: str | None = None, tls_client: dict | None = None):
        self.kind = kind
        self.process = process
        self.port = port
        # The directory the registry was given for its data (Stowage's `root_dir` when it
        # runs on the filesystem, Distribution's `rootdirectory`).
        self.storage = storage
        # Stowage only: the store tables it was started with; a restart reuses them, so it
        # comes back on the same directories or buckets.
        self.stores_toml = stores_toml
        # Over TLS only: the `requests` keyword arguments (`verify`, `cert`) a client needs
        # to be served; the URL is then https.
        self.tls_client = tls_client

    @property
    def host(self) -> str:
        """`host:port`, as image references name a registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "http" if self.tls_client is None else "https"
        return f"{scheme}://{self.host}"

    @property
    def data_root(self) -> Path:
        """The directory that holds `v2/` (blobs and repositories)."""
        if self.kind == DISTRIBUTION:
            return self.storage / "docker" / "registry"
        return self.storage

    def running(self) -> bool:
        return self.process.running()

    def stop(self) -> int:
        """Graceful stop: SIGTERM, then SIGKILL if it has not exited within 30 s."""
        return self.process.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no graceful shutdown; locks it holds stay taken until their TTL."""
        self.process.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines)

    def log_after(self, offset: int, *needles: str) -> str:
        """The log from `offset` on, once it holds every needle (see `wait_for_log`)."""
        return wait_for_log(lambda: self.log_text()[offset:], *needles)


def answers(url: str, tls_client: dict | None = None) -> bool:
    """`GET /v2/` answers 200, or 401 from a registry that wants credentials."""
    try:
        status = requests.get(f"{url}/v2/", timeout=2, **(tls_client or {})).status_code
    except requests.RequestException:
        return False
    return status in (200, 401)


def launch(kind: str, argv: list, workdir: Path, port: int,
           storage: Path | None = None, stores_toml: str | None = None,
           tls_client: dict | None = None, env: dict | None = None) -> Registry:
    """Starts a registry process configured to listen on `port`; returns once it answers.
    `env` is its whole environment (default: this process's)."""
    scheme = "http" if tls_client is None else "https"
    url = f"{scheme}://127.0.0.1:{port}"
    process = start(argv, workdir / f"{kind}-{port}.log", lambda: answers(url, tls_client),
                    f"{kind} on {url}", env=env, cwd=workdir, timeout=START_TIMEOUT)
    return Registry(kind, process, port, storage, stores_toml, tls_client)


def start_stowage(workdir: Path, stores_toml: str, binary: str | None = None,
                  server_toml: str = "", tls_client: dict | None = None,
                  storage: Path | None = None, env: dict | None = None) -> Registry:
    """Stowage on `stores_toml`, listening on 127.0.0.1 at a free port. `server_toml` is
    the rest of its configuration: keys of the `[server]` table, then any later tables.
    `tls_client` is what `requests` needs to reach it over TLS; `storage` what
    `Registry.data_root` names; `env` its whole environment."""
    binary = binary or server_binary()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / f"stowage-{port}.toml"
    config.write_text(
        f'[server]\nbind_address = "127.0.0.1"\nport = {port}\n{server_toml}\n{stores_toml}'
    )
    return launch(STOWAGE, [binary, "serve", "--config", config], workdir, port,
                  storage, stores_toml, tls_client, env)
