//! `hub_standin`: a local stand-in for the Hugging Face Hub's download protocol, for
//! tests and scripts (tools/check_hub_standin.py, the page's tests). Never for users.
//!
//! ```text
//! hub_standin --repo ORG/NAME=DIR [--repo ...] [--gated ORG/NAME] [--token TOKEN]
//!             [--port P] [--cdn-port Q] [--commit SHA40] [--cut-once PATH]
//! ```
//! Ports 0 (the default) take any free port. Prints `ready http://127.0.0.1:P` on stdout
//! once both ports listen, then serves until killed. The server itself is
//! tests/common/hub_standin.rs (also used in-process by tests/hub.rs).

#[path = "../tests/common/hub_standin.rs"]
mod hub_standin;

use std::io::Write;

fn main() {
    let config = match hub_standin::Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hub_standin: {e}\nusage: hub_standin --repo ORG/NAME=DIR [--repo ...] [--gated ORG/NAME] [--token TOKEN] [--port P] [--cdn-port Q] [--commit SHA40] [--cut-once PATH]");
            std::process::exit(2);
        }
    };
    let server = match hub_standin::Standin::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hub_standin: {e}");
            std::process::exit(1);
        }
    };
    println!("ready {}", server.url);
    let _ = std::io::stdout().flush();
    eprintln!("hub_standin: files on {}", server.cdn_url);
    loop {
        std::thread::park();
    }
}
