//! Reading a worker's answer frames on the instance worker thread itself,
//! with a deadline, instead of on a reader thread that hands them over.
//!
//! Why not a reader thread: every hand-off between threads is a wake-up,
//! and on a virtual machine a wake-up of a thread on another, idle core
//! costs about 20 µs (an inter-processor interrupt through the hypervisor)
//! against a few µs for the script's own `run()`. A round trip through a
//! reader thread took three of them; reading here takes two, and the one
//! on the answer is skipped too when the answer comes within a short spin
//! (see [`FrameReader::recv`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::protocol::{self, Message};

/// Why no frame came.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing complete before the deadline; the worker may still be busy.
    Timeout,
    /// The pipe closed (the worker exited) or could not be read, or the
    /// frame was malformed.
    Io(io::Error),
}

/// Frames from a non-blocking pipe: bytes read so far are kept between
/// calls, so a frame that straddles a timeout is never torn.
pub struct FrameReader<F: AsFd> {
    pipe: F,
    buf: BytesMut,
}

/// The smallest read: a frame header and a small answer in one call.
const READ_CHUNK: usize = 64 << 10;

impl<F: AsFd> FrameReader<F> {
    /// Sets the pipe non-blocking; from then on only this reads it.
    pub fn new(pipe: F) -> io::Result<FrameReader<F>> {
        rustix::io::ioctl_fionbio(pipe.as_fd(), true)?;
        Ok(FrameReader {
            pipe,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// The next frame, waiting until `deadline`. For up to `spin` the wait
    /// is a busy loop of non-blocking reads, so an answer that comes within
    /// it is seen at once instead of after a wake-up; past it the thread
    /// sleeps in `poll`.
    pub fn recv(&mut self, deadline: Instant, spin: Duration) -> Result<Message, RecvError> {
        let spin_until = Instant::now() + spin;
        loop {
            if let Some(frame) = self.complete_frame().map_err(RecvError::Io)? {
                return protocol::decode(frame).map_err(RecvError::Io);
            }
            match self.read_some() {
                Ok(0) => {
                    return Err(RecvError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the worker closed its output",
                    )))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(RecvError::Io(e)),
                Err(_) => {}
            }
            let now = Instant::now();
            if now < spin_until {
                // Yield rather than burn: on a busy machine the core goes to
                // whoever is runnable (often the very worker being waited
                // for); on an idle one this returns at once.
                std::thread::yield_now();
                continue;
            }
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            wait_readable(self.pipe.as_fd(), deadline - now).map_err(RecvError::Io)?;
        }
    }

    /// Reads what the pipe has into the buffer; `Ok(0)` is end of stream.
    fn read_some(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        let n = rustix::io::read(self.pipe.as_fd(), self.buf.spare_capacity_mut())?
            .0
            .len();
        // SAFETY: `read` initialised the first `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// Splits a whole frame (without its length prefix) off the buffer, if
    /// one is there; makes room for the rest of a partial one.
    fn complete_frame(&mut self) -> io::Result<Option<Bytes>> {
        let Some(len) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = protocol::frame_len(len.try_into().expect("4 bytes"))?;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(4 + len);
        Ok(Some(frame.split_off(4).freeze()))
    }
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let timeout = Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        // Readable, closed (POLLHUP) or timed out: the caller's read and
        // clock say which.
        Ok(_) => Ok(()),
        Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pipe() -> (FrameReader<std::io::PipeReader>, std::io::PipeWriter) {
        let (r, w) = std::io::pipe().unwrap();
        (FrameReader::new(r).unwrap(), w)
    }

    fn ready_frame() -> Vec<u8> {
        let mut f = 1u32.to_le_bytes().to_vec();
        f.push(protocol::READY);
        f
    }

    #[test]
    fn a_frame_split_across_writes_and_a_timeout_is_read_whole() {
        let (mut r, mut w) = pipe();
        let f = ready_frame();
        w.write_all(&f[..3]).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            r.recv(soon, Duration::ZERO),
            Err(RecvError::Timeout)
        ));
        w.write_all(&f[3..]).unwrap();
        w.write_all(&f).unwrap();
        let later = Instant::now() + Duration::from_secs(5);
        for _ in 0..2 {
            assert!(matches!(
                r.recv(later, Duration::from_micros(50)),
                Ok(Message::Ready)
            ));
        }
    }

    #[test]
    fn a_closed_pipe_is_end_of_stream_and_a_bad_length_an_error() {
        let (mut r, w) = pipe();
        drop(w);
        let later = Instant::now() + Duration::from_secs(5);
        match r.recv(later, Duration::ZERO) {
            Err(RecvError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        let (mut r, mut w) = pipe();
        w.write_all(&0u32.to_le_bytes()).unwrap();
        match r.recv(later, Duration::ZERO) {
            Err(RecvError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_frame_larger_than_the_pipe_buffer_arrives_whole() {
        let (mut r, mut w) = pipe();
        let mut body = vec![protocol::RUN_ERROR];
        for s in ["E", &"x".repeat(300_000), "tb"] {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        let writer = std::thread::spawn(move || {
            w.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
            w.write_all(&body).unwrap();
        });
        let later = Instant::now() + Duration::from_secs(10);
        match r.recv(later, Duration::ZERO) {
            Ok(Message::Error { message, .. }) => assert_eq!(message.len(), 300_000),
            other => panic!("{other:?}"),
        }
        writer.join().unwrap();
    }
}
