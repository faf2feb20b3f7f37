"""Real services the live suites need, started on free loopback ports and stopped by PID:
the server under test, an S3 server (moto or Garage), Redis, and CNCF Distribution as a reference."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def registry_up(url: str) -> bool:
    """`GET /v2/` answers 200, or 401 from a registry that wants credentials."""
    try:
        return http_ok(f"{url}/v2/")
    except urllib.error.HTTPError as e:
        return e.code == 401


class Process:
    """A child process we started; stopped by its PID only."""

    def __init__(self, argv, log_path: Path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


# The S3 credentials every test store uses; the Garage launcher imports them as its key
# (Garage wants an ID of 8 characters or more and a secret of 16 or more; moto takes any).
S3_ACCESS_KEY = "stowage-test"
S3_SECRET_KEY = "stowage-test-secret"
S3_REGION = "us-east-1"


class _S3Store:
    """What both S3 servers offer the tests: a client, fresh buckets, store tables."""

    name = ""
    endpoint = ""

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
        )

    def new_bucket(self) -> str:
        self.buckets = getattr(self, "buckets", 0) + 1
        name = f"stowage-{os.getpid()}-{self.buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_toml(self, table: str, bucket: str, prefix: str = "", extra: str = "") -> str:
        return (
            f"[{table}.s3]\n"
            f'access_key_id = "{S3_ACCESS_KEY}"\nsecret_key = "{S3_SECRET_KEY}"\n'
            f'endpoint = "{self.endpoint}"\nbucket = "{bucket}"\nregion = "{S3_REGION}"\n'
            f'key_prefix = "{prefix}"\n{extra}'
        )


class MotoServer(_S3Store):
    """moto's S3 server, a Python mock of AWS S3."""

    name = "moto"

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            workdir / "moto.log",
        )
        wait_until(lambda: http_ok(f"{self.endpoint}/moto-api/"), "moto_server")

    def stop(self):
        self.process.stop()


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
        self.process = Process(
            [self.binary, "-c", str(self.config), "server"], workdir / "garage.log", env=env
        )
        try:
            wait_until(lambda: self._cli_ok("status"), "garage's RPC")
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


def fs_toml(table: str, root: Path) -> str:
    return f'[{table}.fs]\nroot_dir = "{root}"\n'


class RedisServer:
    """redis-server on a free port, without persistence (a restart starts empty), stopped by
    PID. `stop()` then `start()` brings it back on the same port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = Process(argv, self.workdir / f"redis-{self.port}.log")
        wait_until(lambda: self.cli("PING") == "PONG", f"redis-server on port {self.port}")

    def stop(self) -> None:
        self.process.stop()

    def cli(self, *args: str) -> str:
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args]
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


class Registry:
    """One stowage server process on a configuration of its own."""

    def __init__(self, binary: str, workdir: Path, stores_toml: str, extra_toml: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.toml"
        self.config.write_text(f"[server]\nport = {self.port}\n{extra_toml}\n{stores_toml}")
        self.process = Process([binary, "serve", "--config", str(self.config)], workdir / "server.log")
        try:
            wait_until(self._up, f"{binary} on {self.url}")
        except RuntimeError:
            self.process.stop()
            raise RuntimeError(f"server did not start:\n{self.process.tail()}")

    def _up(self) -> bool:
        # A server that exited will not come up: say so now rather than after the timeout.
        if not self.running():
            raise RuntimeError(f"exited with status {self.process.proc.returncode}")
        return registry_up(self.url)

    @property
    def host(self) -> str:
        """`host:port`, as image references name a registry."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        return self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, locks it holds stay taken until their TTL."""
        self.process.stop(signal.SIGKILL)

    def running(self) -> bool:
        return self.process.proc.poll() is None

    def log_text(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def log_after(self, offset: int, *needles: str) -> str:
        """The log from `offset` on, once it holds every needle (see `wait_for_log`)."""
        return wait_for_log(lambda: self.log_text()[offset:], *needles)


def wait_for_log(read, *needles: str, timeout: float = 5.0) -> str:
    """What `read()` returns once it holds every needle (case-insensitive) or `timeout` has
    passed: a server writes its log in batches from a thread of its own, a little later."""
    deadline = time.monotonic() + timeout
    while True:
        logged = read()
        if all(n.lower() in logged.lower() for n in needles) or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


class Distribution:
    """Debian's `docker-registry` (CNCF Distribution 2.8) on a filesystem root of its own;
    `auth_yaml` is its `auth:` section, if any."""

    def __init__(self, workdir: Path, auth_yaml: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "distribution.yml"
        # JSON strings are YAML strings: safe quoting for paths.
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {json.dumps(str(workdir / 'root'))}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {json.dumps(f'127.0.0.1:{self.port}')}\n"
            f"{auth_yaml}"
        )
        self.process = Process(["docker-registry", "serve", str(config)], workdir / "distribution.log")
        try:
            wait_until(lambda: registry_up(self.url), f"docker-registry on {self.url}")
        except RuntimeError:
            self.process.stop()
            raise RuntimeError(f"docker-registry did not start:\n{self.process.tail()}")

    def stop(self) -> int:
        return self.process.stop()


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
