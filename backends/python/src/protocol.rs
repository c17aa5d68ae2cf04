//! The framed binary protocol between the server and a worker process (see
//! `harness.py` for the worker's side). Tensors travel as their raw bytes,
//! never as JSON lists.

#[cfg(test)]
use std::io::Read;
use std::io::{self, Write};

use bytes::Bytes;
use ferroserve_backend_core::{DataType, Tensor};

pub const RUN: u8 = 1;
pub const READY: u8 = 2;
pub const INIT_ERROR: u8 = 3;
pub const RESULT: u8 = 4;
pub const RUN_ERROR: u8 = 5;

/// Largest frame accepted from a worker: a bound on what a broken script
/// can make the server allocate.
const MAX_FRAME: usize = 1 << 31;

/// One frame read from a worker.
#[derive(Debug)]
pub enum Message {
    Ready,
    /// init() or run() raised: the exception's type, message and traceback.
    Error {
        init: bool,
        kind: String,
        message: String,
        traceback: String,
    },
    Result(Vec<(String, Tensor)>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a RUN frame with `tensors` (name, tensor).
pub fn write_run<W: Write>(w: &mut W, tensors: &[(&str, &Tensor)]) -> io::Result<()> {
    let mut head = Vec::with_capacity(64 * tensors.len() + 8);
    head.push(RUN);
    head.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    let mut total = head.len();
    // Headers are small and built in memory; tensor data is written as is.
    let mut parts: Vec<(Vec<u8>, &Bytes)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let mut h = Vec::with_capacity(64);
        put_str(&mut h, name);
        put_str(&mut h, t.dtype.as_str());
        h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        total += h.len() + t.data.len();
        parts.push((h, &t.data));
    }
    w.write_all(&(total as u32).to_le_bytes())?;
    w.write_all(&head)?;
    for (h, data) in parts {
        w.write_all(&h)?;
        w.write_all(data)?;
    }
    w.flush()
}

struct Cursor {
    data: Bytes,
    pos: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> io::Result<Bytes> {
        if self.data.len() - self.pos < n {
            return Err(bad("frame ends early"));
        }
        let b = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
    fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b[..].try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b[..].try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("worker protocol: {what}"),
    )
}

/// The body length a frame's 4-byte prefix announces, checked: an empty
/// or oversized frame means the stream is not this protocol any more.
pub fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(bad(&format!("frame of {len} bytes")));
    }
    Ok(len)
}

/// Reads one frame. End of stream (the worker exited) is `UnexpectedEof`.
#[cfg(test)]
fn read_message<R: Read>(r: &mut R) -> io::Result<Message> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut buf = vec![0u8; frame_len(len)?];
    r.read_exact(&mut buf)?;
    decode(Bytes::from(buf))
}

/// Parses one frame's body (after its length prefix). Tensor data stays a
/// slice of `frame`.
pub fn decode(frame: Bytes) -> io::Result<Message> {
    if frame.is_empty() {
        return Err(bad("empty frame"));
    }
    let mut c = Cursor {
        data: frame,
        pos: 1,
    };
    match c.data[0] {
        READY => Ok(Message::Ready),
        kind @ (INIT_ERROR | RUN_ERROR) => Ok(Message::Error {
            init: kind == INIT_ERROR,
            kind: c.str()?,
            message: c.str()?,
            traceback: c.str()?,
        }),
        RESULT => {
            let n = c.u32()? as usize;
            let mut out = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let name = c.str()?;
                let dtype: DataType = c
                    .str()?
                    .parse()
                    .map_err(|_| bad("unknown datatype in a result"))?;
                let ndim = c.u32()? as usize;
                let mut shape = Vec::with_capacity(ndim.min(16));
                for _ in 0..ndim {
                    shape.push(c.u64()? as i64);
                }
                let nbytes = c.u64()? as usize;
                let data = c.take(nbytes)?;
                let t = Tensor::new(dtype, shape, data)
                    .map_err(|e| bad(&format!("output {name:?}: {e}")))?;
                out.push((name, t));
            }
            Ok(Message::Result(out))
        }
        other => Err(bad(&format!("unknown frame kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_frame_has_the_layout_the_harness_reads() {
        let t = Tensor::new(
            DataType::Fp32,
            vec![1, 2],
            Bytes::from_static(&[0, 0, 128, 63, 0, 0, 0, 64]),
        )
        .unwrap();
        let mut out = Vec::new();
        write_run(&mut out, &[("x", &t)]).unwrap();
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        assert_eq!(out[4], RUN);
        assert_eq!(u32::from_le_bytes(out[5..9].try_into().unwrap()), 1);
        assert!(out.ends_with(&[0, 0, 128, 63, 0, 0, 0, 64]));
    }

    #[test]
    fn results_and_errors_parse_and_truncation_is_an_error() {
        let mut body = vec![RESULT];
        body.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut body, "y");
        put_str(&mut body, "INT64");
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&16u64.to_le_bytes());
        body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        match read_message(&mut &frame[..]).unwrap() {
            Message::Result(ts) => {
                assert_eq!(ts[0].0, "y");
                assert_eq!(ts[0].1.shape, [2]);
            }
            other => panic!("{other:?}"),
        }
        let cut = &frame[..frame.len() - 3];
        assert!(read_message(&mut &cut[..]).is_err());
        let mut e = vec![RUN_ERROR];
        for s in ["ValueError", "bad", "Traceback..."] {
            put_str(&mut e, s);
        }
        let mut frame = (e.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&e);
        assert!(matches!(
            read_message(&mut &frame[..]).unwrap(),
            Message::Error { init: false, ref kind, .. } if kind == "ValueError"
        ));
    }
}
