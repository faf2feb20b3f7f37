//! The access log (`[observability.log] access_log`): a line per request in the log's format,
//! handed to the log's writer thread like every other line.
//!
//! Formatted here rather than by `tracing`'s formatter, which walks each field through a
//! generic visitor and took about 9 % of a manifest GET's CPU under load; the lines read as
//! that formatter's would (text, or JSON through `serde_json`), and `RUST_LOG` still
//! silences them (`stowage::access=off`), asked once at startup as the filter never changes.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stowage_http::{ACCESS_LOG_TARGET, AccessLog, AccessRecord};

use crate::config::{LogFormat, LogSettings};
use crate::log_writer::LogWriter;

/// Where access lines go, or `None` when they are off.
pub(crate) fn start(settings: &LogSettings, out: LogWriter) -> Option<Arc<dyn AccessLog>> {
    let wanted =
        settings.access_log && tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO);
    wanted.then(|| {
        Arc::new(AccessLines {
            format: settings.format,
            out,
        }) as Arc<dyn AccessLog>
    })
}

struct AccessLines {
    format: LogFormat,
    out: LogWriter,
}

thread_local! {
    /// Each thread's line being formatted, kept for the next.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The second this thread last logged in, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The length of a [`timestamp`].
const TIMESTAMP_LEN: usize = 27;

/// `now` in RFC 3339 with microseconds, as `humantime` writes it
/// (`2026-12-04T17:40:01.123456Z`); the date and time of day are formatted once per second
/// per thread, as every line of that second shares them.
fn timestamp(now: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    let (cached, mut date_and_time) = SECOND.get();
    if cached != second {
        let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
        date_and_time.copy_from_slice(&whole.to_string().as_bytes()[..19]);
        SECOND.set((second, date_and_time));
    }
    let mut out = [0; TIMESTAMP_LEN];
    out[..19].copy_from_slice(&date_and_time);
    out[19] = b'.';
    let mut micros = since_epoch.subsec_micros();
    for digit in out[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[26] = b'Z';
    out
}

impl AccessLog for AccessLines {
    fn write(&self, request: &AccessRecord<'_>) {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            let timestamp = timestamp(SystemTime::now());
            let timestamp = std::str::from_utf8(&timestamp).unwrap_or_default();
            let formatted = match self.format {
                LogFormat::Text => text(&mut line, timestamp, request),
                LogFormat::Json => json(&mut line, timestamp, request),
            };
            if formatted.is_ok() {
                self.out.append(&line);
            }
        });
    }
}

/// As `tracing`'s text format: strings quoted and escaped, absent fields left out. Pieces are
/// appended directly rather than through `write!`, whose formatting machinery was most of
/// a line's cost.
fn text(line: &mut Vec<u8>, timestamp: &str, request: &AccessRecord<'_>) -> std::io::Result<()> {
    line.extend_from_slice(timestamp.as_bytes());
    line.extend_from_slice(b"  INFO ");
    line.extend_from_slice(ACCESS_LOG_TARGET.as_bytes());
    line.extend_from_slice(b": request method=");
    line.extend_from_slice(request.method.as_str().as_bytes());
    line.extend_from_slice(b" route=");
    quoted(line, request.route)?;
    if let Some(repository) = request.repository {
        line.extend_from_slice(b" repository=");
        quoted(line, repository)?;
    }
    if let Some(status) = request.status {
        number(line, b" status=", status.into());
    }
    number(line, b" bytes_in=", request.bytes_in);
    number(line, b" bytes_out=", request.bytes_out);
    line.extend_from_slice(b" duration_ms=");
    millis(line, request.duration);
    line.extend_from_slice(b" client=");
    address(line, request.client)?;
    if let Some(identity) = request.identity {
        line.extend_from_slice(b" identity=");
        quoted(line, identity)?;
    }
    line.extend_from_slice(b" request_id=");
    quoted(line, request.request_id)?;
    line.push(b'\n');
    Ok(())
}

/// `text` in double quotes, escaped as `Debug` escapes it: copied as it is when there is
/// nothing to escape, as with route templates, repository names and most request ids.
fn quoted(line: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    let plain = text
        .bytes()
        .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if !plain {
        return write!(line, "{text:?}");
    }
    line.push(b'"');
    line.extend_from_slice(text.as_bytes());
    line.push(b'"');
    Ok(())
}

/// As `Display` writes it; an IPv4 address (most clients) without the formatting machinery.
fn address(line: &mut Vec<u8>, address: IpAddr) -> std::io::Result<()> {
    match address {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                line.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
            Ok(())
        }
        IpAddr::V6(v6) => write!(line, "{v6}"),
    }
}

fn number(line: &mut Vec<u8>, name: &[u8], value: u64) {
    line.extend_from_slice(name);
    line.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Milliseconds with up to six decimals, trailing zeros left out: what [`duration_ms`]'s
/// `f64` prints as (`1.5`, `0.061099`, `2`).
fn millis(line: &mut Vec<u8>, duration: Duration) {
    let nanos = duration.as_nanos();
    let whole = u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX);
    line.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    let mut fraction = nanos % 1_000_000;
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    if let Some(last) = digits.iter().rposition(|&digit| digit != b'0') {
        line.push(b'.');
        line.extend_from_slice(&digits[..=last]);
    }
}

/// As `tracing`'s JSON format with the event's fields flattened.
#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    method: &'a str,
    route: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    client: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    request_id: &'a str,
    target: &'static str,
}

fn json(line: &mut Vec<u8>, timestamp: &str, request: &AccessRecord<'_>) -> std::io::Result<()> {
    let fields = JsonLine {
        timestamp,
        level: "INFO",
        message: "request",
        method: request.method.as_str(),
        route: request.route,
        repository: request.repository,
        status: request.status,
        bytes_in: request.bytes_in,
        bytes_out: request.bytes_out,
        duration_ms: duration_ms(request),
        client: request.client,
        identity: request.identity,
        request_id: request.request_id,
        target: ACCESS_LOG_TARGET,
    };
    serde_json::to_writer(&mut *line, &fields)?;
    line.push(b'\n');
    Ok(())
}

/// Divided from whole nanoseconds, so the shortest form of the result is the exact decimal
/// (`0.061099`, where seconds times 1000 can print `0.06109900000000001`).
fn duration_ms(request: &AccessRecord<'_>) -> f64 {
    request.duration.as_nanos() as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(method: &'a http::Method, identity: Option<&'a str>) -> AccessRecord<'a> {
        AccessRecord {
            method,
            route: "/v2/{name}/manifests/{reference}",
            repository: Some("team/app"),
            status: Some(201),
            bytes_in: 527,
            bytes_out: 0,
            duration: Duration::from_micros(1500),
            client: "::1".parse().unwrap(),
            identity,
            request_id: r#"a"b\c"#,
        }
    }

    fn formatted(format: LogFormat, request: &AccessRecord<'_>) -> String {
        let mut line = Vec::new();
        let timestamp = "1970-01-01T00:00:00.000000Z";
        match format {
            LogFormat::Text => text(&mut line, timestamp, request),
            LogFormat::Json => json(&mut line, timestamp, request),
        }
        .unwrap();
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn a_text_line_quotes_and_escapes_what_a_client_chose() {
        let method = http::Method::PUT;
        assert_eq!(
            formatted(LogFormat::Text, &record(&method, Some("ci \"bot\""))),
            "1970-01-01T00:00:00.000000Z  INFO stowage::access: request method=PUT \
             route=\"/v2/{name}/manifests/{reference}\" repository=\"team/app\" status=201 \
             bytes_in=527 bytes_out=0 duration_ms=1.5 client=::1 identity=\"ci \\\"bot\\\"\" \
             request_id=\"a\\\"b\\\\c\"\n"
        );
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        let mut at = Duration::from_micros(1);
        for step in 0..3000u64 {
            let now = UNIX_EPOCH + at;
            assert_eq!(
                std::str::from_utf8(&timestamp(now)).unwrap(),
                humantime::format_rfc3339_micros(now).to_string(),
                "{at:?}"
            );
            // Steps within one second, then across seconds, days and years.
            at += Duration::from_micros(step * step * 7_919 + step);
        }
    }

    #[test]
    fn an_ipv4_client_reads_as_display_writes_it() {
        for client in ["192.0.2.7", "0.0.0.0", "255.255.255.255", "10.200.3.45"] {
            let mut line = Vec::new();
            address(&mut line, client.parse().unwrap()).unwrap();
            assert_eq!(String::from_utf8(line).unwrap(), client);
        }
    }

    #[test]
    fn milliseconds_print_as_their_f64_does() {
        let mut nanos = 1u64;
        for step in 0..2000u64 {
            let duration = Duration::from_nanos(nanos);
            let mut line = Vec::new();
            millis(&mut line, duration);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                duration_ms(&AccessRecord {
                    duration,
                    ..record(&http::Method::GET, None)
                })
                .to_string(),
                "{nanos} ns"
            );
            nanos = nanos * 7 / 5 + step;
            if nanos > 1 << 50 {
                nanos = step;
            }
        }
    }

    #[test]
    fn a_json_line_has_every_field_and_leaves_out_the_absent() {
        let method = http::Method::GET;
        let mut request = record(&method, None);
        request.status = None;
        let line = formatted(LogFormat::Json, &request);
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
        let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({
                "timestamp": "1970-01-01T00:00:00.000000Z",
                "level": "INFO",
                "message": "request",
                "method": "GET",
                "route": "/v2/{name}/manifests/{reference}",
                "repository": "team/app",
                "bytes_in": 527,
                "bytes_out": 0,
                "duration_ms": 1.5,
                "client": "::1",
                "request_id": "a\"b\\c",
                "target": "stowage::access",
            })
        );
    }
}
