//! `stowage` (tokio) and `stowage-smol` must behave the same where the runtime shows:
//! graceful shutdown, the request header timeout and the body idle timeout. Each test runs
//! the same scenario against both binaries.

mod support;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::http;
use support::server::{Runtime, Server, Timeouts};

/// Slack for timing checks on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

/// Starts an upload session; its `Location`.
fn start_upload(server: &Server, repository: &str) -> String {
    let response = http::send(
        server.address,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        b"",
    );
    assert_eq!(
        response.status, 202,
        "{:?}: start an upload",
        server.runtime
    );
    response
        .header("location")
        .expect("an upload has a Location")
        .to_owned()
}

/// Opens a connection and sends a `PATCH` head for `length` bytes of upload body.
fn patch_head(server: &Server, location: &str, length: usize) -> TcpStream {
    let mut stream = http::connect(server.address);
    let length = length.to_string();
    let head = http::head(
        "PATCH",
        location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", &length),
        ],
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    stream
}

fn refuses_connections(address: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

fn assert_within(runtime: Runtime, what: &str, elapsed: Duration, expected: Duration) {
    assert!(
        elapsed + Duration::from_millis(100) >= expected && elapsed <= expected + SLACK,
        "{runtime:?}: {what} after {elapsed:?}, expected about {expected:?}"
    );
}

/// SIGTERM during a trickling upload: no new connections, the upload finishes with 202,
/// then the process exits 0 (well before the shutdown timeout).
fn shutdown_finishes_in_flight_upload(runtime: Runtime) {
    const PIECES: usize = 10;
    const PIECE: &[u8] = &[7; 100];
    let mut server = Server::start(
        runtime,
        Timeouts {
            request_header: 5,
            body_idle: 5,
            shutdown: 20,
        },
    );
    let location = start_upload(&server, "parity/shutdown");
    let mut upload = patch_head(&server, &location, PIECES * PIECE.len());
    for piece in 0..PIECES {
        upload.write_all(PIECE).expect("send a piece of the body");
        if piece == 2 {
            server.signal("TERM");
        }
        if piece == 5 {
            assert!(
                refuses_connections(server.address),
                "{runtime:?} accepts connections after SIGTERM:\n{}",
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    let response = http::read_response(&upload).expect("the in-flight upload's response");
    assert_eq!(response.status, 202, "{runtime:?}:\n{}", server.log());
    assert_eq!(response.header("range"), Some("0-999"), "{runtime:?}");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "{runtime:?} exited with {status:?} after its last request:\n{}",
        server.log()
    );
}

/// SIGINT while an upload stalls: shutdown waits `shutdown_timeout_secs`, then exits 0.
fn shutdown_is_bounded_by_its_timeout(runtime: Runtime) {
    let timeout = Duration::from_secs(1);
    let mut server = Server::start(
        runtime,
        Timeouts {
            request_header: 5,
            body_idle: 30,
            shutdown: timeout.as_secs(),
        },
    );
    let location = start_upload(&server, "parity/stalled");
    let mut upload = patch_head(&server, &location, 100);
    upload.write_all(&[1; 10]).expect("send part of the body");
    thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    server.signal("INT");
    let status = server.wait_exit(timeout + SLACK + SLACK);
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "{runtime:?} exited with {status:?}:\n{}",
        server.log()
    );
    assert_within(runtime, "exit", signalled.elapsed(), timeout);
}

/// Half a request head, then silence: the server closes the connection after about the
/// header timeout. Returns what it sent before closing.
fn header_timeout_closes_connection(runtime: Runtime) -> Vec<u8> {
    let timeout = Duration::from_secs(1);
    let server = Server::start(
        runtime,
        Timeouts {
            request_header: timeout.as_secs(),
            body_idle: 30,
            shutdown: 5,
        },
    );
    let mut stream = http::connect(server.address);
    let sent = Instant::now();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("send half a head");
    let received = http::read_until_closed(&stream).expect("the server closes the connection");
    assert_within(runtime, "close", sent.elapsed(), timeout);
    // The server still serves everyone else.
    assert_eq!(http::send(server.address, "GET", "/v2/", b"").status, 200);
    received
}

/// A body that stops after 10 of 100 bytes: the request fails after about the idle timeout
/// and the upload keeps nothing of it. Returns the failed request's status.
fn body_idle_timeout_fails_request(runtime: Runtime) -> u16 {
    let timeout = Duration::from_secs(1);
    let server = Server::start(
        runtime,
        Timeouts {
            request_header: 5,
            body_idle: timeout.as_secs(),
            shutdown: 5,
        },
    );
    let location = start_upload(&server, "parity/idle");
    let mut upload = patch_head(&server, &location, 100);
    upload.write_all(&[1; 10]).expect("send part of the body");
    let stalled = Instant::now();
    let response = http::read_response(&upload).expect("a response to the stalled upload");
    assert_within(runtime, "failure", stalled.elapsed(), timeout);
    assert!(
        (400..500).contains(&response.status),
        "{runtime:?}: a stalled body got {}",
        response.status
    );
    let status = http::send(server.address, "GET", &location, b"");
    assert_eq!(status.status, 204, "{runtime:?}: upload status");
    assert_eq!(status.header("range"), Some("0-0"), "{runtime:?}");
    response.status
}

#[test]
fn shutdown_lets_in_flight_requests_finish_on_both_runtimes() {
    for runtime in Runtime::ALL {
        shutdown_finishes_in_flight_upload(runtime);
    }
}

#[test]
fn shutdown_is_bounded_by_its_timeout_on_both_runtimes() {
    for runtime in Runtime::ALL {
        shutdown_is_bounded_by_its_timeout(runtime);
    }
}

#[test]
fn header_timeout_closes_slow_connections_alike() {
    let [tokio, smol] = Runtime::ALL.map(header_timeout_closes_connection);
    assert_eq!(
        String::from_utf8_lossy(&tokio),
        String::from_utf8_lossy(&smol),
        "both close the same way"
    );
}

#[test]
fn body_idle_timeout_fails_stalled_uploads_alike() {
    let [tokio, smol] = Runtime::ALL.map(body_idle_timeout_fails_request);
    assert_eq!(tokio, smol, "both answer a stalled body the same");
}
