fn main() {
    std::process::exit(portmgr::cli::main_with_args(std::env::args_os().collect()));
}
