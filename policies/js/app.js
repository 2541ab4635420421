// The component glue: exports `nix-wasm-hook:policy/policy` (wit/policy.wit) with the rules of
// logic.js. Built by `cargo xtask build-other-policies` with componentize-js.
import { decide } from "./logic.js";

export const policy = { decide };
