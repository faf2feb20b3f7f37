//! A server binary running on a free loopback port with a fresh root and short timeouts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The server runtimes under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Tokio,
    Smol,
}

impl Runtime {
    pub const ALL: [Runtime; 2] = [Runtime::Tokio, Runtime::Smol];

    /// The binary. Cargo builds `stowage-smol` for its own tests; `stowage` belongs to
    /// another package, so it is looked up beside it (same target folder, same profile).
    fn binary(self) -> PathBuf {
        let smol = PathBuf::from(env!("CARGO_BIN_EXE_stowage-smol"));
        match self {
            Runtime::Smol => smol,
            Runtime::Tokio => {
                let tokio = smol.with_file_name("stowage");
                assert!(
                    tokio.is_file(),
                    "the tokio server {} is missing: build it with the same profile as these \
                     tests first, e.g. `cargo build --release --workspace --bins`",
                    tokio.display()
                );
                tokio
            }
        }
    }
}

/// The `[server]` timeouts, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub request_header: u64,
    pub body_idle: u64,
    pub shutdown: u64,
}

pub struct Server {
    pub runtime: Runtime,
    pub address: SocketAddr,
    child: Child,
    root: PathBuf,
    log: Arc<Mutex<String>>,
}

/// Long enough for a cold start on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Distinguishes the servers one test process starts.
static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Starts `runtime` on port 0 and learns the port from its "listening" log line, so no
    /// other process can take the port in between.
    pub fn start(runtime: Runtime, timeouts: Timeouts) -> Server {
        let root = std::env::temp_dir().join(format!(
            "stowage-parity-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).expect("create the server's folder");
        let config = root.join("config.toml");
        let Timeouts {
            request_header,
            body_idle,
            shutdown,
        } = timeouts;
        std::fs::write(
            &config,
            format!(
                "[server]\nport = 0\nrequest_header_timeout_secs = {request_header}\n\
                 body_idle_timeout_secs = {body_idle}\nshutdown_timeout_secs = {shutdown}\n\
                 [blob_store.fs]\nroot_dir = {:?}\n",
                root.join("data")
            ),
        )
        .expect("write the configuration");
        let mut child = Command::new(runtime.binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let log_sink = log.clone();
        // Drains stderr for the whole run (a full pipe would block the server's logging).
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening")
                    && let Some(address) = line
                        .split_whitespace()
                        .find_map(|word| word.strip_prefix("address="))
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = address_tx.send(address);
                }
                let mut log = log_sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Server {
            runtime,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            root,
            log,
        };
        match address_rx.recv_timeout(START_TIMEOUT) {
            Ok(address) => server.address = address,
            Err(_) => panic!("{runtime:?} did not start:\n{}", server.log()),
        }
        server
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The exit status, if the process ends within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
