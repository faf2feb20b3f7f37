//! Just enough HTTP/1.1 over a blocking `TcpStream` to write a request piece by piece and
//! read what comes back.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longer than any timeout the tests configure, so a silent server fails the test instead
/// of hanging it.
const READ_LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect to the server");
    stream
        .set_read_timeout(Some(READ_LIMIT))
        .expect("set a read timeout");
    stream
}

/// A request head (no body) with the given extra headers.
pub fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends a whole request on a new connection and reads the answer.
pub fn send(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut stream = connect(address);
    let length = body.len().to_string();
    let head = head(
        method,
        path,
        &[("Content-Length", &length), ("Connection", "close")],
    );
    stream.write_all(head.as_bytes()).expect("send a request");
    stream.write_all(body).expect("send a request body");
    read_response(&stream).expect("read a response")
}

/// Reads a response's head and its `Content-Length` body.
pub fn read_response(stream: &TcpStream) -> io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let response = Response { status, headers };
    let length = response
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(response)
}

/// Reads until the server closes the connection; what it sent before that.
pub fn read_until_closed(mut stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => Ok(received),
        // A close with unread data arrives as a reset: closed all the same.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(received),
        Err(e) => Err(e),
    }
}
