//! Decision traces as `replay` reads them (crates/trace): any bytes are read line by line
//! without a panic, and a record that is read is written back to the same record.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nwh_trace::{parse_line, Reader};

fuzz_target!(|data: &[u8]| {
    let reader = Reader::new(Path::new("fuzz.jsonl"), Box::new(std::io::Cursor::new(data.to_vec())));
    for item in reader {
        match item {
            Ok((_, record)) => {
                let line = serde_json::to_string(&record).unwrap();
                assert_eq!(parse_line(&line).unwrap(), record, "{line}");
            }
            Err(e) => drop(format!("{e:#}")),
        }
    }
});
