//! `wasi:io` streams and pollables for plugins called on Fulcrum's async worker threads.
//!
//! wasmtime-wasi's sync bindings carry out the blocking stream operations, polling, and dropping
//! a stream by `block_on` on the current Tokio runtime, which panics on a runtime worker thread.
//! Leaving the worker around every call of every plugin that imports WASI would cost each of
//! their calls a thread hand-off (tokio's `block_in_place`: 20–30 µs more per request, measured
//! here, against a 1.3 µs call of a C plugin). So only those operations leave the worker
//! ([`crate::blocking::wait`]); every other one, and every call that makes none (nearly all: the
//! context is empty, stdout and stderr are discarded), runs in place.

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi_io::poll::DynPollable;

use crate::blocking::wait;

/// The store's resource table, seen by the `wasi:io` host functions.
pub struct OffWorker<'a>(pub &'a mut ResourceTable);

/// The linker's `HasData` for [`OffWorker`].
pub struct HasOffWorker;

impl HasData for HasOffWorker {
    type Data<'a> = OffWorker<'a>;
}

type OutputStream = Resource<streams::OutputStream>;
type InputStream = Resource<streams::InputStream>;

impl streams::Host for OffWorker<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for OffWorker<'_> {
    fn drop(&mut self, stream: OutputStream) -> wasmtime::Result<()> {
        wait(|| streams::HostOutputStream::drop(self.0, stream))
    }

    fn check_write(&mut self, stream: OutputStream) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: OutputStream, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: OutputStream, bytes: Vec<u8>) -> StreamResult<()> {
        wait(|| streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: OutputStream, len: u64) -> StreamResult<()> {
        wait(|| streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: OutputStream) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: OutputStream, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: OutputStream) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: OutputStream) -> StreamResult<()> {
        wait(|| streams::HostOutputStream::blocking_flush(self.0, stream))
    }

    fn splice(&mut self, dst: OutputStream, src: InputStream, len: u64) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(&mut self, dst: OutputStream, src: InputStream, len: u64) -> StreamResult<u64> {
        wait(|| streams::HostOutputStream::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for OffWorker<'_> {
    fn drop(&mut self, stream: InputStream) -> wasmtime::Result<()> {
        wait(|| streams::HostInputStream::drop(self.0, stream))
    }

    fn read(&mut self, stream: InputStream, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: InputStream, len: u64) -> StreamResult<Vec<u8>> {
        wait(|| streams::HostInputStream::blocking_read(self.0, stream, len))
    }

    fn skip(&mut self, stream: InputStream, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: InputStream, len: u64) -> StreamResult<u64> {
        wait(|| streams::HostInputStream::blocking_skip(self.0, stream, len))
    }

    fn subscribe(&mut self, stream: InputStream) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl poll::Host for OffWorker<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        wait(|| poll::Host::poll(self.0, pollables))
    }
}

impl poll::HostPollable for OffWorker<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        wait(|| poll::HostPollable::ready(self.0, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        wait(|| poll::HostPollable::block(self.0, pollable))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(self.0, pollable)
    }
}
