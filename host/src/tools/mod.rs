//! The tools for people, over the same core with no Nix in front: [`check`] (every builder as
//! the hook uses it), [`explain`] (where a derivation would go), [`replay`] (a trace against a
//! policy), [`simulate`] (a workload on a cluster). Each `mod.rs` is the command: arguments in,
//! a call, printing out; the work is in its other files. What they all share, here: their
//! output and exit status.

pub mod check;
pub mod explain;
pub mod replay;
pub mod simulate;

/// Runs one of the offline tools with stdout as its output: its exit status, or `error`
/// after printing the error (`nix-wasm-hook NAME: …`). A closed stdout (`… | head`) is no
/// error.
pub fn main(name: &str, error: i32, run: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<i32>) -> i32 {
    match run(&mut std::io::stdout().lock()) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("nix-wasm-hook {name}: {e:#}");
            error
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
