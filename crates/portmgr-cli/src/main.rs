fn main() {
    // `portmgr serve` lives in its own crate (an HTTP stack the library never compiles).
    portmgr::cli::set_serve(portmgr_serve::serve);
    std::process::exit(portmgr::cli::main_with_args(std::env::args_os().collect()));
}
