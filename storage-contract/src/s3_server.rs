//! The S3 servers the suite runs the S3 backend against. Each is an [`S3Endpoint`]: a URL,
//! a bucket that exists, and credentials; adding a server is one more endpoint.
//!
//! moto is started by the test itself from the project's venv (`conformance/install-deps.sh`
//! installs it), on a free loopback port, and stopped by its handle when the test ends. A
//! missing moto fails the test: the suite never skips a backend.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where an S3 server is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    pub url: String,
    /// A bucket that exists; each case works below a key prefix of its own in it.
    pub bucket: String,
    pub access_key_id: String,
    pub secret_key: String,
    pub region: String,
    /// Whether the server honours `If-None-Match: *` on CopyObject (AWS S3 does; moto 5.2
    /// ignores it and replaces the object). The backend's startup probe finds the same and
    /// sends the condition only where it is honoured (`s3_conditions.rs`); where it is not,
    /// a move onto an existing object replaces it, and the suite checks that it does exactly
    /// that (a content address, so the same bytes in the registry's use).
    pub honours_conditional_copy: bool,
}

/// An S3 server this process started.
pub struct S3Server {
    child: Child,
    endpoint: S3Endpoint,
}

impl S3Server {
    /// moto's server from `<workspace>/.venv`, with a fresh bucket.
    pub fn moto() -> Self {
        let binary = workspace().join(".venv/bin/moto_server");
        assert!(
            binary.exists(),
            "the storage contract's S3 cases need moto at {}: run conformance/install-deps.sh",
            binary.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("stowage-contract-moto-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("a log file for moto");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log_file.try_clone().expect("a log file for moto"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let url = format!("http://127.0.0.1:{port}");
        let server = S3Server {
            child,
            endpoint: S3Endpoint {
                url: url.clone(),
                bucket: "stowage-contract".to_owned(),
                access_key_id: "stowage".to_owned(),
                secret_key: "stowage-secret".to_owned(),
                region: "us-east-1".to_owned(),
                honours_conditional_copy: false,
            },
        };
        wait_until_up(&format!("{url}/moto-api/"), &log);
        // moto does not check signatures, so a plain request creates the bucket.
        ureq::put(&format!("{url}/{}", server.endpoint.bucket))
            .send_empty()
            .unwrap_or_else(|e| panic!("cannot create a bucket on moto: {e}"));
        server
    }

    pub fn endpoint(&self) -> &S3Endpoint {
        &self.endpoint
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn wait_until_up(url: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ureq::get(url).call().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "moto did not answer at {url} within 30 s; its log: {}",
        log.display()
    );
}
