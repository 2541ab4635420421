//! Reading a trace a few records ahead of the decisions, on a thread of its own.

use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

use anyhow::{Context, Result};

use nwh_trace::{Reader, Record, TraceError};

/// The trace's records, parsed a few ahead of the one being decided on a thread of their own:
/// a record of a thousand machines is ~170 KiB of JSON, and parsing it costs about as much as
/// deciding it, so on two cores the two overlap. The order, and the first error, stay as the
/// trace has them. A record goes back to that thread to be freed: its ~5 000 blocks freed on
/// another thread than the one that allocated them cost glibc's allocator a tenth of replay.
pub struct ReadAhead {
    records: Receiver<Result<(usize, Record), TraceError>>,
    used: Sender<Record>,
}

impl ReadAhead {
    pub fn open(trace: &Path) -> Result<ReadAhead> {
        const AHEAD: usize = 16;
        let (send, records) = sync_channel(AHEAD);
        let (used, returned) = channel::<Record>();
        let trace = trace.to_path_buf();
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || {
                let reader = match Reader::open(&trace) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = send.send(Err(e));
                        return;
                    }
                };
                for item in reader {
                    let failed = item.is_err();
                    // The receiver is gone when replay stopped at an earlier error.
                    if send.send(item).is_err() || failed {
                        return;
                    }
                    returned.try_iter().for_each(drop);
                }
            })
            .context("starting the trace reader")?;
        Ok(ReadAhead { records, used })
    }

    pub fn next(&self) -> Option<Result<(usize, Record), TraceError>> {
        self.records.recv().ok()
    }

    /// Hands a record back to be freed (here, when the reader has finished).
    pub fn done(&self, record: Record) {
        let _ = self.used.send(record);
    }
}
