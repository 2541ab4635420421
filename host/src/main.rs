fn main() {
    std::process::exit(nix_wasm_hook::cli::main());
}
