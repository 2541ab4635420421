//! The WASI calls that wait, held to the policy's deadline.
//!
//! The engine's epoch deadline stops Wasm code, not a host function: a policy waiting in
//! `wasi:io/poll` (which is what `std::thread::sleep` is on wasm32-wasip2) would keep the hook,
//! and Nix behind it, for as long as it asked. So every WASI 0.2 function that can wait is
//! defined again over wasmtime-wasi's own: the same wait, run for no longer than the call has
//! left. At the deadline the function traps, the call fails, and the default policy decides.
//!
//! What can wait: `poll` and `[method]pollable.block` (on any pollable: a clock subscription,
//! a stream's readiness), and the `blocking-*` methods of input and output streams.

use std::future::Future;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, LinkerInstance, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable as _};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    self, Host as _, HostInputStream as _, HostOutputStream as _,
};

use super::sandbox::StoreState;

/// The version of `wasi:io` that wasmtime-wasi 48 defines (its `src/p2/wit/deps/io.wit`). A
/// definition replaces the original only under the very same name; a guest built against
/// any 0.2.x links to it (the linker matches semver-compatible names).
const WASI_IO: &str = "0.2.12";

/// How long the call may still run, and where it was waiting when that ran out.
pub struct Deadline {
    started: Instant,
    after: Duration,
    /// The WASI function the policy was still waiting in when its deadline came.
    pub missed_in: Option<&'static str>,
}

impl Deadline {
    /// Counted from now: the store is made just before the component is instantiated.
    pub fn new(after: Duration) -> Deadline {
        Deadline { started: Instant::now(), after, missed_in: None }
    }

    /// `wait` to its end, or a trap when the deadline comes first.
    fn bound<F: Future>(&mut self, call: &'static str, wait: F) -> wasmtime::Result<F::Output> {
        let left = self.after.saturating_sub(self.started.elapsed());
        // The timer is made inside the runtime wasmtime-wasi's own clock subscriptions use
        // (made outside any runtime, it would panic).
        match wasmtime_wasi::runtime::in_tokio(async move { tokio::time::timeout(left, wait).await }) {
            Ok(done) => Ok(done),
            Err(_elapsed) => {
                self.missed_in = Some(call);
                Err(wasmtime::format_err!("the policy's deadline passed while it waited in `{call}`"))
            }
        }
    }
}

type Store<'a> = StoreContextMut<'a, StoreState>;

/// Defines the waiting functions of `wasi:io` again in `linker`, which must already hold
/// wasmtime-wasi's.
pub fn bound_waits(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll(linker.instance(&format!("wasi:io/poll@{WASI_IO}"))?)?;
    input_streams(&mut linker.instance(&format!("wasi:io/streams@{WASI_IO}"))?)?;
    output_streams(&mut linker.instance(&format!("wasi:io/streams@{WASI_IO}"))?)?;
    // Any other definition of a name already defined is a mistake.
    linker.allow_shadowing(false);
    Ok(())
}

fn poll(mut poll: LinkerInstance<'_, StoreState>) -> wasmtime::Result<()> {
    poll.func_wrap("poll", |mut store: Store<'_>, (list,): (Vec<Resource<DynPollable>>,)| {
        let (table, deadline) = store.data_mut().waiting();
        let ready = deadline.bound("wasi:io/poll.poll", table.poll(list))??;
        Ok((ready,))
    })?;
    poll.func_wrap("[method]pollable.block", |mut store: Store<'_>, (p,): (Resource<DynPollable>,)| {
        let (table, deadline) = store.data_mut().waiting();
        deadline.bound("wasi:io/poll.[method]pollable.block", table.block(p))??;
        Ok(())
    })
}

/// The guest's form of a stream's result: its error is a WIT variant (a closed stream, or a
/// failure as an `error` resource); a host error that is a trap stays one.
type Wit<T> = (Result<T, streams::StreamError>,);

fn to_wit<T>(table: &mut ResourceTable, result: StreamResult<T>) -> wasmtime::Result<Wit<T>> {
    match result {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(table.convert_stream_error(e)?),)),
    }
}

fn input_streams(streams: &mut LinkerInstance<'_, StoreState>) -> wasmtime::Result<()> {
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: Store<'_>, (s, len): (Resource<DynInputStream>, u64)| {
            let (table, deadline) = store.data_mut().waiting();
            let read = deadline.bound("wasi:io/streams.[method]input-stream.blocking-read", {
                table.blocking_read(s, len)
            })?;
            to_wit(table, read)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: Store<'_>, (s, len): (Resource<DynInputStream>, u64)| {
            let (table, deadline) = store.data_mut().waiting();
            let skipped = deadline.bound("wasi:io/streams.[method]input-stream.blocking-skip", {
                table.blocking_skip(s, len)
            })?;
            to_wit(table, skipped)
        },
    )
}

fn output_streams(streams: &mut LinkerInstance<'_, StoreState>) -> wasmtime::Result<()> {
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: Store<'_>, (s, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let (table, deadline) = store.data_mut().waiting();
            let written = deadline
                .bound("wasi:io/streams.[method]output-stream.blocking-write-and-flush", {
                    table.blocking_write_and_flush(s, bytes)
                })?;
            to_wit(table, written)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: Store<'_>, (s, len): (Resource<DynOutputStream>, u64)| {
            let (table, deadline) = store.data_mut().waiting();
            let written = deadline
                .bound("wasi:io/streams.[method]output-stream.blocking-write-zeroes-and-flush", {
                    table.blocking_write_zeroes_and_flush(s, len)
                })?;
            to_wit(table, written)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: Store<'_>, (s,): (Resource<DynOutputStream>,)| {
            let (table, deadline) = store.data_mut().waiting();
            let flushed = deadline
                .bound("wasi:io/streams.[method]output-stream.blocking-flush", table.blocking_flush(s))?;
            to_wit(table, flushed)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: Store<'_>,
         (to, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let (table, deadline) = store.data_mut().waiting();
            let moved = deadline.bound("wasi:io/streams.[method]output-stream.blocking-splice", {
                table.blocking_splice(to, from, len)
            })?;
            to_wit(table, moved)
        },
    )
}
