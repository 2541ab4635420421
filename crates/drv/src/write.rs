//! The ATerm printer: a derivation as the text Nix writes to a `.drv`.

use std::collections::BTreeMap;
use std::fmt;

use crate::derivation::{BasicDerivation, Derivation, Output};

impl Derivation {
    /// The ATerm text Nix would write for this derivation (for a parsed file: the file itself).
    pub fn to_aterm(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("Derive(");
        aterm_outputs(&mut out, &self.outputs);
        out.push_str(",[");
        for (i, (path, names)) in self.input_drvs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('(');
            aterm_string(&mut out, path);
            out.push(',');
            aterm_string_list(&mut out, names);
            out.push(')');
        }
        out.push_str("],");
        aterm_string_list(&mut out, &self.input_srcs);
        aterm_rest(&mut out, &self.platform, &self.builder, &self.args, &self.env);
        out
    }
}

impl BasicDerivation {
    /// ATerm form of this basic derivation (with an empty input-derivation list), for logs
    /// and tests.
    pub fn to_aterm(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("Derive(");
        aterm_outputs(&mut out, &self.outputs);
        out.push_str(",[],");
        aterm_string_list(&mut out, &self.input_srcs);
        aterm_rest(&mut out, &self.platform, &self.builder, &self.args, &self.env);
        out
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_aterm())
    }
}

fn aterm_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn aterm_string_list<'a>(out: &mut String, items: impl IntoIterator<Item = &'a String>) {
    out.push('[');
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        aterm_string(out, s);
    }
    out.push(']');
}

fn aterm_outputs(out: &mut String, outputs: &BTreeMap<String, Output>) {
    out.push('[');
    for (i, (name, o)) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('(');
        aterm_string(out, name);
        for field in [&o.path, &o.hash_algo, &o.hash] {
            out.push(',');
            aterm_string(out, field);
        }
        out.push(')');
    }
    out.push(']');
}

fn aterm_rest(
    out: &mut String,
    platform: &str,
    builder: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) {
    out.push(',');
    aterm_string(out, platform);
    out.push(',');
    aterm_string(out, builder);
    out.push(',');
    aterm_string_list(out, args);
    out.push_str(",[");
    for (i, (k, v)) in env.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('(');
        aterm_string(out, k);
        out.push(',');
        aterm_string(out, v);
        out.push(')');
    }
    out.push_str("])");
}
