//! The main job: allocate ports for a few named services from the shared registry and
//! show them. `cargo run --release --example services [NAME...]`
//!
//! Ports come from the host-wide registry (`PORTMGR_DIR` or the per-user default), so
//! any other process allocating at the same time gets different ones. The hash strategy
//! gives each name the same port run after run while that port is free.

use portmgr::{Protocols, Registry, Request, Strategy};

fn main() {
    if let Err(e) = run() {
        eprintln!("services: {e}");
        std::process::exit(1);
    }
}

fn run() -> portmgr::Result<()> {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = ["web", "api", "postgres", "redis"].map(String::from).to_vec();
    }
    let reg = Registry::open_default()?;
    println!("registry: {}", reg.dir().display());
    println!("pool:     {}", reg.default_pool()?);
    let mut leases = Vec::new();
    for name in &names {
        let req = Request::new().name(name.as_str()).strategy(Strategy::Hash(None)).protocols(Protocols::TCP);
        match reg.get_or_allocate(&req)? {
            Ok(lease) => leases.push(lease),
            Err(existing) => println!("{name:<10} already held by process {} on port {}", existing[0].owner_pid, existing[0].port),
        }
    }
    println!("\n{:<10} {:>5}  {:<5} OWNER", "SERVICE", "PORT", "PROTO");
    for name in &names {
        for info in reg.get_by_name(name)? {
            println!("{name:<10} {:>5}  {:<5} pid {}", info.port, info.protocols, info.owner_pid);
        }
    }
    let s = reg.stats()?;
    let count = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "\n{} held host-wide by {}; {} of {} free in the pool",
        count(s.held, "port", "ports"),
        count(s.owners, "process", "processes"),
        s.free,
        s.pool_size
    );
    println!("(these leases end when this program exits; `portmgr alloc` keeps ports for shell scripts)");
    drop(leases);
    Ok(())
}
