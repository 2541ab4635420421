pub mod fake_parent;
pub mod testbed;
