//! The hook's state directory (`state-dir`): the SSH control sockets and the warm-session
//! keeper's socket, through which anyone who can connect runs commands on the builders as the
//! hook's user (root), and the records of builders found down. It is secret: only the hook's
//! user may have any access to it, which is checked (with the directories above it) before
//! anything in it is used.

use std::path::Path;

use nwh_files::private::{Access, PrivateDir, PrivateError};

/// `path`, a directory in the state directory (`STATE/ssh`, `STATE/down`), made when absent:
/// the state directory checked as secret, then `path` itself with `access`.
pub fn subdir(path: &Path, access: Access) -> Result<PrivateDir, PrivateError> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(state), Some(name)) => PrivateDir::create(state, Access::Secret)?.subdir(name, access),
        _ => PrivateDir::create(path, access),
    }
}
