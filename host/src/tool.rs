//! What every offline tool (`check`, `explain`, `replay`, `simulate`) shares: its output and
//! exit status.

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
