//! A bounded in-memory pipe for a guest's stdout and stderr.
//!
//! A std guest writes its panic message to stderr just before it traps;
//! keeping the tail of what it wrote lets the host log that message with
//! the failed call. The pipe never refuses a write (the guest is told every
//! byte went through, so printing never becomes a failure of its own) and
//! keeps only the last [`CAPACITY`] bytes. It is cleared before each call.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per instance: enough for a panic message and its location.
pub(crate) const CAPACITY: usize = 4096;

/// The shared buffer behind a guest's stdout and stderr.
#[derive(Clone, Default)]
pub(crate) struct OutputPipe {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl OutputPipe {
    /// Forgets what was written so far.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// What was written since the last [`clear`](Self::clear), as text.
    pub(crate) fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).trim_end().to_string()
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        // Keep the tail: the panic message comes last.
        let bytes = &bytes[bytes.len().saturating_sub(CAPACITY)..];
        let overflow = (buffer.len() + bytes.len()).saturating_sub(CAPACITY);
        buffer.drain(..overflow);
        buffer.extend_from_slice(bytes);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // The buffer is plain bytes: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IsTerminal for OutputPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for OutputPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CAPACITY)
    }
}

#[async_trait::async_trait]
impl Pollable for OutputPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
