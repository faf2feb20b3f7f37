//! hyper's IO traits over an async-io TCP stream. smol-hyper's adapter zeroes the whole free
//! part of hyper's read buffer (up to its `max_buf_size`) before every read, even one that
//! finds no data; here the kernel writes into the buffer directly, as hyper-util's tokio
//! adapter does.

use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_io::Async;
use futures_lite::AsyncWrite;
use hyper::rt::ReadBufCursor;
use socket2::SockRef;

pub struct Connection(Async<TcpStream>);

impl Connection {
    pub fn new(stream: Async<TcpStream>) -> Self {
        Self(stream)
    }
}

impl hyper::rt::Read for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            // SAFETY: `recv` only writes into the slice; it never de-initializes a byte.
            let free = unsafe { buf.as_mut() };
            match SockRef::from(self.0.get_ref()).recv(free) {
                Ok(read) => {
                    // SAFETY: `recv` initialized the first `read` bytes.
                    unsafe { buf.advance(read) };
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.0.poll_readable(cx))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::rt::Write for Connection {
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

    /// hyper queues response bodies for one vectored write only where the socket says so;
    /// otherwise it copies every body chunk into one flat buffer first.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.get_ref().shutdown(Shutdown::Write))
    }
}
