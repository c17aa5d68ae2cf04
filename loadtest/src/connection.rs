use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{RequestError, RequestSpec};

/// One keep-alive HTTP/1.1 connection.
///
/// The generator uses hyper's connection-level client rather than a pooled
/// client so that "N connections" means exactly N sockets: a pool would open
/// and close connections on its own and blur what was measured.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

/// A whole answer, body included: the body is always read to the end, since
/// a server is not done with a request until its last byte is out.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Connection {
    /// Connects with `TCP_NODELAY`: small requests must not wait for Nagle's
    /// algorithm, or latency measures the kernel instead of the server.
    pub async fn connect(addr: SocketAddr) -> Result<Connection, RequestError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| RequestError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| RequestError::Connect { addr, source })?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| RequestError::Handshake { addr, source })?;
        // The connection task ends by itself when the sender is dropped or the
        // peer closes; its error, if any, surfaces on the next send.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid header value");
        Ok(Connection { sender, host })
    }

    pub async fn send(&mut self, spec: &RequestSpec) -> Result<Answer, RequestError> {
        self.ready().await?;
        self.send_ready(spec).await
    }

    /// Waits until the connection can take a request; an error means the
    /// server closed it while it was idle.
    pub async fn ready(&mut self) -> Result<(), RequestError> {
        Ok(self.sender.ready().await?)
    }

    /// Sends on a connection that [`ready`](Connection::ready) said is ready.
    async fn send_ready(&mut self, spec: &RequestSpec) -> Result<Answer, RequestError> {
        let response = self
            .sender
            .send_request(spec.to_request(&self.host))
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// False once the server has closed the connection (for example after
    /// answering `Connection: close`), so the caller knows to reconnect.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}
