//! Arbitrary input must never panic (slicing at a multi-byte character, an empty line, …):
//! the hook parses user files and must answer the parent in every case.

use crate::common;

use common::parse;

#[test]
fn random_lines_never_panic() {
    // No letters that could spell a real path such as /dev/zero.
    let alphabet: Vec<char> = "ab5-#;@ \t\r\n,.é€:[]?/'\"=+0c3N".chars().collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..20_000 {
        let len = next() % 40;
        let value: String = (0..len).map(|_| alphabet[next() % alphabet.len()]).collect();
        let m = parse(&value);
        for d in &m.diagnostics {
            let shown = d.to_string();
            assert!(d.line >= 1 && d.column >= 1, "{value:?}: {shown}");
            assert!(
                !d.message.is_empty() && !d.expected.is_empty() && !d.fix.is_empty(),
                "{value:?}: {shown}"
            );
        }
    }
}
