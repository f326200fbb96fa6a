//! `cli_main`: the `portmgr` command line (the same Rust code as the cargo binary), run
//! from the Python package's console script.

use std::panic::catch_unwind;

use pyo3::prelude::*;

/// Run the `portmgr` command line with `argv` (argv[0] is the program name); returns
/// the exit status. The same Rust code as the cargo binary.
#[pyfunction]
pub(super) fn cli_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(|| {
        use std::io::Write;
        // main_with_args catches its own panics; this is a second net.
        let code =
            catch_unwind(|| crate::cli::main_with_args(argv)).unwrap_or(crate::cli::EXIT_OTHER);
        // No Rust `main` runs here to flush on exit: flush now, before Python exits.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    })
}
