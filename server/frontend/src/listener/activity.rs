//! What one connection is doing, so that the accept loop can tell an idle
//! connection from a busy one and a slow request head from an idle wait.
//!
//! [`TrackedIo`] sees every byte hyper reads; the per-request wrapper
//! ([`super::front`]) marks requests in flight. Both update one shared
//! [`Activity`] with relaxed atomics: a few nanoseconds per read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface starts with these bytes; no HTTP/1 method
/// does.
const H2_PREFACE_START: &[u8; 4] = b"PRI ";

pub struct Activity {
    origin: Instant,
    /// Requests whose response has not been fully sent (or dropped).
    inflight: AtomicUsize,
    /// Milliseconds since `origin` of the last sign of life: a request
    /// starting or ending, or (HTTP/1 only) bytes arriving.
    last_active_ms: AtomicU64,
    bytes_read: AtomicU64,
    /// `bytes_read` when the last request ended: more than that means a
    /// new request head has started arriving.
    bytes_read_when_idle: AtomicU64,
    /// HTTP/2 connections carry PINGs and window updates that are not
    /// requests, so their bytes do not count as activity.
    h2: AtomicBool,
}

impl Activity {
    pub fn new(h2: bool) -> Activity {
        Activity {
            origin: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_read_when_idle: AtomicU64::new(0),
            h2: AtomicBool::new(h2),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    fn read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        if !self.is_h2() {
            self.touch();
        }
    }

    /// A request started; the guard marks its end when dropped.
    pub fn request_started(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InflightGuard(Arc::clone(self))
    }

    /// How long the connection has had no request in flight and (HTTP/1)
    /// no bytes arriving; `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.last_active_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// Whether bytes of a new request arrived since the last one ended (or
    /// since the connection opened).
    pub fn partial_request_pending(&self) -> bool {
        self.bytes_read.load(Ordering::Relaxed) > self.bytes_read_when_idle.load(Ordering::Relaxed)
    }
}

/// Marks one request in flight until dropped: the response's body holds it,
/// so a request counts until its answer has been sent, and a handler future
/// dropped by a disconnect still ends it.
pub struct InflightGuard(Arc<Activity>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let a = &self.0;
        if a.inflight.fetch_sub(1, Ordering::Relaxed) == 1 {
            a.bytes_read_when_idle
                .store(a.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
            a.touch();
        }
    }
}

/// The connection's byte stream, reporting reads to its [`Activity`].
pub struct TrackedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    /// The first bytes read, until there are enough to spot HTTP/2.
    head: [u8; 4],
    head_len: u8,
}

impl<I> TrackedIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> TrackedIo<I> {
        let known = activity.is_h2();
        TrackedIo {
            inner,
            activity,
            head: [0; 4],
            head_len: if known { 4 } else { 0 },
        }
    }

    fn sniff(&mut self, bytes: &[u8]) {
        let have = self.head_len as usize;
        let take = (4 - have).min(bytes.len());
        self.head[have..have + take].copy_from_slice(&bytes[..take]);
        self.head_len += take as u8;
        if self.head_len == 4 && &self.head == H2_PREFACE_START {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            if this.head_len < 4 {
                this.sniff(&buf.filled()[before..]);
            }
            this.activity.read(n);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_partial_heads() {
        let a = Arc::new(Activity::new(false));
        assert!(a.idle_for().is_some());
        assert!(!a.partial_request_pending());
        a.read(10);
        assert!(a.partial_request_pending());
        let g = a.request_started();
        assert!(a.idle_for().is_none());
        let g2 = a.request_started();
        drop(g);
        assert!(a.idle_for().is_none());
        drop(g2);
        assert!(a.idle_for().is_some());
        assert!(!a.partial_request_pending());
        a.read(1);
        assert!(a.partial_request_pending());
    }

    #[tokio::test]
    async fn spots_the_http2_preface_across_reads() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (chunks, h2) in [
            (vec![&b"PRI * HTTP/2.0\r\n"[..]], true),
            (vec![&b"PR"[..], b"I", b" *"], true),
            (vec![&b"POST /x HTTP/1.1\r\n"[..]], false),
            (vec![&b"P"[..], b"UT /"], false),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            let a = Arc::new(Activity::new(false));
            let mut io = TrackedIo::new(server, Arc::clone(&a));
            let mut buf = [0u8; 64];
            for c in chunks {
                client.write_all(c).await.unwrap();
                let _ = io.read(&mut buf).await.unwrap();
            }
            assert_eq!(a.is_h2(), h2);
        }
    }
}
