//! hyper's IO traits over a futures-rustls stream. rustls decrypts into an initialized
//! slice, so a read zeroes part of hyper's buffer first: only as much as one TLS record can
//! fill (smol-hyper's adapter zeroes the whole free part, up to hyper's `max_buf_size`, for
//! every read).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_io::Async;
use futures_lite::io::BufReader;
use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::server::TlsStream;
use hyper::rt::ReadBufCursor;

/// The most plaintext one TLS record carries.
const READ_WINDOW: usize = 16 * 1024;

pub struct TlsConnection(TlsStream<BufReader<Async<TcpStream>>>);

impl TlsConnection {
    pub fn new(stream: TlsStream<BufReader<Async<TcpStream>>>) -> Self {
        Self(stream)
    }
}

impl hyper::rt::Read for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the window is initialized below before it is read or handed out.
        let free = unsafe { buf.as_mut() };
        let len = free.len().min(READ_WINDOW);
        let window: &mut [MaybeUninit<u8>] = &mut free[..len];
        window.fill(MaybeUninit::new(0));
        // SAFETY: every byte of the window was just initialized.
        let window = unsafe { &mut *(window as *mut [MaybeUninit<u8>] as *mut [u8]) };
        let read = ready!(Pin::new(&mut self.0).poll_read(cx, window))?;
        // SAFETY: the first `read` bytes of the window are initialized (all of it is).
        unsafe { buf.advance(read) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    /// rustls encrypts several slices into records in one call.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    /// Sends TLS close_notify, then shuts the socket's write side.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
