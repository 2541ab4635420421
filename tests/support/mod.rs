pub mod fake_parent;
