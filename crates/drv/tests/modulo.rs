//! The hash modulo and DrvOutput ids of floating content-addressed derivations, against the ids
//! real Nix 2.8.0 recorded for them: each fixture was built with `nix-build --store <chroot>`
//! (`ca-derivations` on, see fixtures/generate.nix) and `nix realisation info --store <chroot>
//! <drv>` printed the ids below.

use std::collections::BTreeMap;
use std::path::Path;

use nwh_drv::{drv_output_id, Derivation, ModuloError};

fn load(name: &str) -> Derivation {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Derivation::read(path).unwrap()
}

fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(n, id)| (n.to_string(), id.to_string())).collect()
}

#[test]
fn the_ids_are_those_nix_2_8_recorded() {
    let one = load("floating-ca.drv");
    assert!(one.has_floating_outputs());
    assert_eq!(
        one.drv_output_ids().unwrap(),
        ids(&[("out", "sha256:092b9758d0e28c67a6bb7fa7e5854c04059f5860075cddea1279e0920b245cd9!out")])
    );
    // Two outputs share one hash; the environment has quotes, a newline, a tab, a backslash.
    let two = load("floating-ca-two.drv");
    assert_eq!(
        two.drv_output_ids().unwrap(),
        ids(&[
            ("dev", "sha256:c7877c208b02c894cc263adad0ea5bac7d9077a5b9f23211743f2e486e817a4d!dev"),
            ("out", "sha256:c7877c208b02c894cc263adad0ea5bac7d9077a5b9f23211743f2e486e817a4d!out"),
        ])
    );
    // Built by Nix 2.8.0 and by Nix 2.34.8: the same id (at different paths, as its output
    // refers to itself).
    assert_eq!(
        load("floating-ca-self.drv").drv_output_ids().unwrap(),
        ids(&[("out", "sha256:c95c52974e6c5b37059c2e996fd65d00b09559c105356a6e9a6999b277bd7197!out")])
    );
}

#[test]
fn outputs_and_their_variables_are_masked_nothing_else() {
    let drv = load("floating-ca-two.drv");
    let masked = drv.masked_aterm();
    assert!(masked.contains(r#"("dev",""),"#) && masked.contains(r#"("out",""),"#), "{masked}");
    assert!(masked.contains(r#"("note","a \"quoted\"\nline\twith tab \\ and backslash")"#), "{masked}");
    let hash = drv.hash_modulo().unwrap();

    // What the placeholders say does not count …
    let mut other = drv.clone();
    other.env.insert("out".into(), "/something-else".into());
    other.outputs.get_mut("dev").unwrap().path = "/nix/store/x".into();
    assert_eq!(other.hash_modulo().unwrap(), hash);
    // … every other byte does.
    let mut other = drv.clone();
    other.env.insert("note".into(), "changed".into());
    assert_ne!(other.hash_modulo().unwrap(), hash);
    let mut other = drv.clone();
    other.outputs.get_mut("dev").unwrap().hash_algo = "r:sha256".into();
    assert_ne!(other.hash_modulo().unwrap(), hash);
}

#[test]
fn what_is_not_hashed_this_way_is_refused() {
    assert_eq!(load("with-input-drvs.drv").hash_modulo(), Err(ModuloError::InputDerivations));
    assert_eq!(load("fixed-output-flat.drv").hash_modulo(), Err(ModuloError::Fixed("out".into())));
    let mut impure = load("floating-ca.drv");
    impure.outputs.get_mut("out").unwrap().hash = "impure".into();
    assert_eq!(impure.hash_modulo(), Err(ModuloError::Impure("out".into())));
    assert!(!load("simple.drv").has_floating_outputs());
}

#[test]
fn the_id_is_printed_as_nix_prints_it() {
    assert_eq!(drv_output_id("00ff", "dev"), "sha256:00ff!dev");
}
