//! Hostile inputs for every field that reaches an exporter's output (nginx, `.env`, JSON,
//! shell): the one list the tests of issue 13.7 share. Used by tests/export_hostile.rs
//! and crates/portmgr-cli/tests/cli_nginx.rs; include it in another test file with
//!
//! ```ignore
//! #[path = "common/hostile.rs"] mod hostile;             // a test in tests/
//! #[path = "../../../tests/common/hostile.rs"] mod hostile; // a test in crates/*/tests/
//! ```
//!
//! and loop over [`hostile_values`]. To add a case, add a line to [`HOSTILE`] (or a
//! generated one to [`hostile_values`]).
//!
//! Rules for an entry: it must be refused by every field that has a syntax (a route, an
//! upstream host; so none starts with a plain `/word/` or is a plain host name), and it
//! must come out harmless where a field is free text (metadata, a reason). An entry that
//! runs a command does `touch pwned` (relative: the tests run the shell in an empty temp
//! directory and assert that no `pwned` appears there) or sets a variable the tests check.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// The literal hostile inputs.
pub const HOSTILE: &[&str] = &[
    // nginx: end the directive, open or close a block, add a location or a server.
    "/a; return 200 pwned;",
    "/a;",
    "/a {",
    "/a }",
    "/a{",
    "/a}",
    "/x/ { return 200 pwned; } location /y/",
    "/x/\n}\nserver { listen 9; }",
    "x\nlocation /evil { return 200 pwned; }",
    "/a\r\ninclude /etc/passwd;",
    "/a\ninclude /etc/nginx/*.conf;",
    "/a\\;b",
    "/a#b",
    "# comment",
    "/a/$host/",
    "/a/${host}/",
    // A shell: command substitution, backticks, quotes that end a quoting.
    "$(touch pwned)",
    "/$(touch pwned)/",
    "`touch pwned`",
    "/`touch pwned`/",
    "'; touch pwned; '",
    "\"; touch pwned; \"",
    "x'y",
    "x\"y",
    "\"",
    "'",
    "x; touch pwned",
    "x && touch pwned",
    "x | touch pwned",
    "x\ntouch pwned",
    "x\rtouch pwned",
    "HOME=/pwned",
    "$HOME",
    "${IFS}touch${IFS}pwned",
    "\\",
    "\\\ntouch pwned",
    // Whitespace, control characters, odd Unicode line breaks.
    "",
    " ",
    "\t",
    "/a b/",
    "/a\tb/",
    "/a\0b/",
    "/a\x1b[31mb/",
    "/a\u{85}b/",
    "/a\u{2028}b/",
    "/a\u{feff}b/",
    // Paths and hosts that look almost right.
    "/../../etc/",
    "/a/../b/",
    "//evil.example/",
    "/%2e%2e/",
    "http://evil.example/",
    "127.0.0.1:80",
    "127.0.0.1/x",
    "[::1",
    "-oProxyCommand=touch pwned",
    "a..b",
];

/// [`HOSTILE`] and generated ones: very long strings (past every length limit, and past
/// the metadata value limit of 4096 bytes).
pub fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = HOSTILE.iter().map(|s| s.to_string()).collect();
    v.push(format!("/{}/", "a".repeat(300)));
    v.push(format!("/{}", "ab/".repeat(2000)));
    v.push("a".repeat(254));
    v.push(["a"; 200].join("."));
    v.push("$(touch pwned)".repeat(400));
    v.push(format!("/{}/", "x;".repeat(100)));
    v
}

/// The path of an nginx binary (scripts/ensure-nginx.sh installs one when missing; a
/// test that needs it fails, never skips, when it cannot be had).
pub fn ensure_nginx() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("scripts/ensure-nginx.sh").exists())
        .expect("the repository root (scripts/ensure-nginx.sh)");
    let script = repo.join("scripts/ensure-nginx.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("running ensure-nginx.sh");
    assert!(out.status.success(), "nginx is needed for this test; {} could not provide it", script.display());
    String::from_utf8(out.stdout).unwrap().lines().last().expect("ensure-nginx.sh printed no path").trim().to_string()
}

/// Run `nginx -t` on a configuration whose first server (on 127.0.0.1:`listen[0]`)
/// includes `dir/*.conf` and whose second (on `listen[1]`) includes `flat`; panics with
/// nginx's words unless the test is successful.
pub fn nginx_t(nginx: &str, prefix: &Path, dir: &Path, flat: &Path, listen: [u16; 2]) {
    let p = prefix.display();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 16; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {p}/cb;\n    proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n\
             server {{\n        listen 127.0.0.1:{a};\n        include {d}/*.conf;\n    }}\n\
             server {{\n        listen 127.0.0.1:{b};\n        include {f};\n    }}\n}}\n",
            a = listen[0],
            b = listen[1],
            d = dir.display(),
            f = flat.display(),
        ),
    )
    .unwrap();
    let out = Command::new(nginx)
        .args(["-e", &format!("{p}/error.log"), "-p", &format!("{p}/"), "-c", &conf.display().to_string(), "-t"])
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && words.contains("test is successful"), "nginx -t failed:\n{words}");
}
