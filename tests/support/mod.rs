pub mod decision_table;
pub mod fake_parent;
pub mod hook;
pub mod hostile;
pub mod procs;
pub mod target;
pub mod testbed;
pub mod tool;
