"""The services the live suites start besides Stowage, each on free loopback ports and stopped
by PID: an S3 server (moto or Garage), Redis, and CNCF Distribution as a reference registry."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

from harness.process import VENV_BIN, StartError, free_port, start, wait_until
from harness.registry import DISTRIBUTION, Registry, launch

# The S3 credentials every test store uses; the Garage launcher imports them as its key
# (Garage wants an ID of 8 characters or more and a secret of 16 or more; moto takes any).
S3_ACCESS_KEY = "stowage-test"
S3_SECRET_KEY = "stowage-test-secret"
S3_REGION = "us-east-1"


def s3_toml(table: str, endpoint: str, bucket: str, prefix: str = "", with_key: bool = True,
            **settings) -> str:
    """`[<table>.s3]` on `endpoint` (the S3 server, or a proxy in front of it); `settings`
    are further keys of the table, e.g. max_attempts=2, multipart_part_size="5MiB". Without
    `with_key` the table holds no access key (the server takes it from its environment)."""
    access_key = {"access_key_id": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY}
    keys = {
        **(access_key if with_key else {}),
        "endpoint": endpoint,
        "bucket": bucket,
        "region": S3_REGION,
        "key_prefix": prefix,
        **settings,
    }
    # JSON's strings and numbers are TOML's too.
    lines = [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return f"[{table}.s3]\n" + "\n".join(lines) + "\n"


class _S3Store:
    """What both S3 servers offer the tests: a client, fresh buckets, store tables."""

    name = ""
    endpoint = ""
    # The CA bundle that verifies an https endpoint's certificate (None: the system's).
    ca_file: str | None = None

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name=S3_REGION,
            config=Config(s3={"addressing_style": "path"}),
            verify=self.ca_file,
        )

    def new_bucket(self) -> str:
        self.buckets = getattr(self, "buckets", 0) + 1
        name = f"stowage-{os.getpid()}-{self.buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_toml(self, table: str, bucket: str, prefix: str = "", **settings) -> str:
        return s3_toml(table, self.endpoint, bucket, prefix, **settings)


class MotoServer(_S3Store):
    """moto's S3 server, a Python mock of AWS S3. With `tls_ca` (a `harness.pki.Ca`) it
    takes only https, with a server certificate that CA issues (`ca_file` holds the CA)."""

    name = "moto"

    def __init__(self, workdir: Path, tls_ca=None):
        self.port = free_port()
        argv = [VENV_BIN / "moto_server", "-H", "127.0.0.1", "-p", self.port]
        scheme = "http"
        if tls_ca is not None:
            cert, key = tls_ca.server("moto").write(workdir / "moto-cert.pem",
                                                    workdir / "moto-key.pem")
            self.ca_file = str(workdir / "moto-ca.pem")
            Path(self.ca_file).write_bytes(tls_ca.cert_pem)
            argv += ["-c", cert, "-k", key]
            scheme = "https"
        self.endpoint = f"{scheme}://127.0.0.1:{self.port}"
        self.process = start(
            argv, workdir / "moto.log",
            lambda: http_ok(f"{self.endpoint}/moto-api/", self.ca_file), "moto_server",
        )

    def stop(self):
        self.process.stop()


def http_ok(url: str, ca_file: str | None = None) -> bool:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return response.status == 200


def garage_binary() -> str:
    """Garage from PATH, or where `cargo install` puts it (conformance/install-deps.sh)."""
    found = shutil.which("garage") or str(Path.home() / ".cargo" / "bin" / "garage")
    if not Path(found).is_file():
        raise RuntimeError("no garage binary: run conformance/install-deps.sh")
    return found


class GarageServer(_S3Store):
    """Garage, a real S3-compatible store: a single-node cluster on free loopback ports with
    its layout assigned and the tests' key imported, allowed to create buckets (so
    `new_bucket` is S3's CreateBucket, as on moto). Data and config live in `workdir`."""

    name = "garage"

    def __init__(self, workdir: Path):
        self.binary = garage_binary()
        self.workdir = workdir
        self.port, rpc_port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "garage.toml"
        self.config.write_text(
            f'metadata_dir = "{workdir}/garage-meta"\n'
            f'data_dir = "{workdir}/garage-data"\n'
            'db_engine = "lmdb"\n'
            "replication_factor = 1\n"
            # Stored as sent: blobs are compressed already, and zstd would only take CPU
            # from the servers being measured on the same cores.
            'compression_level = "none"\n'
            f'rpc_bind_addr = "127.0.0.1:{rpc_port}"\n'
            f'rpc_public_addr = "127.0.0.1:{rpc_port}"\n'
            f'rpc_secret = "{os.urandom(32).hex()}"\n'
            f'[s3_api]\ns3_region = "{S3_REGION}"\napi_bind_addr = "127.0.0.1:{self.port}"\n'
        )
        env = {**os.environ, "RUST_LOG": "warn"}
        self.process = start(
            [self.binary, "-c", self.config, "server"], workdir / "garage.log",
            lambda: self._cli_ok("status"), "garage's RPC", env=env,
        )
        try:
            node = self._cli("node", "id", "-q")[:64]
            self._cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
            self._cli("layout", "apply", "--version", "1")
            self._cli("key", "import", "--yes", "-n", "stowage-tests", S3_ACCESS_KEY, S3_SECRET_KEY)
            self._cli("key", "allow", "--create-bucket", S3_ACCESS_KEY)
            wait_until(self._s3_up, "garage's S3 API")
        except Exception:
            self.process.stop()
            raise RuntimeError(f"garage did not start:\n{self.process.tail()}")

    def _cli(self, *args: str) -> str:
        argv = [self.binary, "-c", str(self.config), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _cli_ok(self, *args: str) -> bool:
        try:
            self._cli(*args)
            return True
        except RuntimeError:
            return False

    def _s3_up(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - not answering yet, whatever the error
            return False

    def stop(self):
        self.process.stop()


S3Server = MotoServer | GarageServer
S3_SERVERS = {"moto": MotoServer, "garage": GarageServer}


def s3_server(workdir: Path) -> S3Server:
    """The S3 server `STOWAGE_S3_SERVER` names (moto, the default, or garage)."""
    name = os.environ.get("STOWAGE_S3_SERVER", "moto").strip().lower() or "moto"
    if name not in S3_SERVERS:
        raise RuntimeError(f"STOWAGE_S3_SERVER={name!r} is not one of {', '.join(S3_SERVERS)}")
    return S3_SERVERS[name](workdir)


class RedisServer:
    """redis-server on a free port, without persistence (a restart starts empty), stopped by
    PID. `stop()` then `start()` brings it back on the same port. With `tls_ca` (a
    `harness.pki.Ca`) it takes only TLS, with a server certificate that CA issues, at a
    `rediss://` URL."""

    def __init__(self, workdir: Path, tls_ca=None):
        self.workdir = workdir
        self.port = free_port()
        self.tls = None
        if tls_ca is not None:
            self.tls = tls_ca.server("redis").write(workdir / "redis-cert.pem",
                                                    workdir / "redis-key.pem")
            (workdir / "redis-ca.pem").write_bytes(tls_ca.cert_pem)
        self.url = f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1"]
        if self.tls:
            cert, key = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = start(argv, self.workdir / f"redis-{self.port}.log",
                             lambda: self.cli("PING") == "PONG", f"redis-server on port {self.port}")

    def stop(self) -> None:
        self.process.stop()

    def cli(self, *args: str) -> str:
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            argv += ["--tls", "--cacert", str(self.workdir / "redis-ca.pem")]
        argv += args
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()

    def keys(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern (SCAN, so a busy server is not blocked)."""
        return sorted(filter(None, self.cli("--scan", "--pattern", pattern).splitlines()))

    def lock_toml(self, store_table: str, prefix: str = "", **settings) -> str:
        """`[<store_table>.redis]` (e.g. store_table="blob_store.fs"): locks in this Redis;
        `settings` are the table's other keys (ttl, max_retries, retry_delay_ms)."""
        keys = "".join(f"{key} = {value}\n" for key, value in settings.items())
        return f'[{store_table}.redis]\nurl = "{self.url}"\nkey_prefix = "{prefix}"\n{keys}'

    def cache_toml(self, prefix: str = "") -> str:
        """`[cache.redis]`: the cache in this Redis."""
        return f'[cache.redis]\nurl = "{self.url}"\nkey_prefix = "{prefix}"\n'


def start_distribution(workdir: Path, storage: Path | None = None, auth_yaml: str = "",
                       tls_yaml: str = "", tls_client: dict | None = None) -> Registry:
    """Debian's `docker-registry` (CNCF Distribution 2.8) on the filesystem root `storage`
    (default `<workdir>/root`; its data lands under `<storage>/docker/registry`); `auth_yaml`
    is its `auth:` section, if any. `tls_yaml` is its `http.tls` section (indented under
    `http:`), and `tls_client` what `requests` needs to reach it over https then."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = Path(storage or workdir / "root")
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / f"distribution-{port}.yml"
    # JSON strings are YAML strings: safe quoting for paths.
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: true\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {json.dumps(str(storage))}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {json.dumps(f'127.0.0.1:{port}')}\n"
        f"{tls_yaml}"
        f"{auth_yaml}"
    )
    binary = shutil.which("docker-registry")
    if not binary:
        raise StartError("Debian's `docker-registry` (CNCF Distribution) is not installed; "
                         "run conformance/install-deps.sh")
    return launch(DISTRIBUTION, [binary, "serve", config], workdir, port, storage,
                  tls_client=tls_client)
