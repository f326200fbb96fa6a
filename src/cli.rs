//! The `portmgr` command line: parsing and printing over core calls.

use std::ffi::OsString;

/// Run the `portmgr` command with `args` (including `argv[0]`) and return its exit status.
/// Used by the cargo binary and by the Python console script; never exits the process.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("portmgr: the command line is not built yet");
    1
}
