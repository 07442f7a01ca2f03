//! The real test fleet: real sshd, HAProxy, memcached and rsync processes on
//! loopback, started and stopped by the tests themselves, for drover's
//! end-to-end tests (issue 4) and for verifying the HAProxy behaviour drover
//! relies on (`haproxy_semantics`, documented in docs/haproxy-semantics.md).
//!
//! ```text
//! TestFleet::start(test, FleetOptions::full(Topology::standard()))
//!   slot      127.<n>.0.0/16 + /tmp/drover-fleet/s<n>, held with flock   slot.rs
//!   sources   php/<version>/, releases/<id>/ served by `rsync --daemon`  harness.rs
//!   nodes     per node: root dir, own sshd + host key, web server         node.rs
//!   memcached one per farm                                               harness.rs
//!   spec      specs/fleet.yaml, checked with drover::spec::validate      topology.rs
//!   LBs       one HAProxy per site on `drover render haproxy`'s output    lb.rs
//!   init      a supervisor thread serving rc-service/systemctl/reboot     node.rs
//! LoadGen     sessions with cookie jars through a site LB                 loadgen.rs
//! ```
//!
//! Every process is started by the harness, its PID written to a PID file in
//! the slot directory, and stopped by PID (SIGTERM, then SIGKILL) when its
//! guard drops — also when a test panics. A run killed outright leaves PID
//! files behind; the next run that takes the slot kills those PIDs (after
//! checking their command line still names the slot) before starting. Tests
//! run in parallel threads: each fleet has its own slot. The tests need root
//! (sshd privilege separation, `useradd`, ports 22 and 80) and fail with a
//! clear message when a binary is missing; `tests/run-all` installs them.
//!
//! # What a real node needs, and what the stand-ins emulate
//!
//! | on a real node | on a test node |
//! |---|---|
//! | sshd on port 22, drover's key in the user's authorized_keys, the host key in drover's known_hosts | the same, with `AuthorizedKeysFile` pointing at the fleet's key and `StrictModes no` (the fleet lives under /tmp) |
//! | a dedicated login user with a POSIX shell (not root: root's bash start-up is slow here) | `drovertest`, `/bin/sh`, password field `*` (sshd with `UsePAM no` refuses `!`) |
//! | root rights for emerge, rc-service/systemctl and reboot, via sudo (NOPASSWD rules) | the stand-ins run as the login user; a `sudo` stand-in just runs its command |
//! | the real paths (`/var/db/pkg`, `/opt/php`, `/srv/app`, `/proc/sys/kernel/...`) | the same paths under `$NODE_ROOT` (set by sshd's `SetEnv`; empty on a real node) |
//! | `emerge` fetching binary packages from `PORTAGE_BINHOST` | records the install in `var/db/pkg`, fetches nothing, refuses source builds, a missing binhost and another profile's binhost |
//! | `qlist -ICv` (portage-utils) | lists `var/db/pkg` the same way |
//! | `rc-service <svc> restart|reload` (OpenRC) or `systemctl` | restarts the web server process (new PID) or makes it re-read the active symlinks; logged in `var/log/rc.log` |
//! | `reboot` | returns at once; 0.3 s later the web server and sshd stop (open SSH connections drop), a new boot id is written and the newest installed kernel package becomes `osrelease`; they come back after `reboot_down` (default 1 s) |
//! | Apache + PHP-FPM + the application, sessions in the farm's memcached | `webserver.py`: serves the active release and PHP version, resolved at start and on reload only (like the opcode/realpath caches), sessions in the farm's memcached |
//! | `uname -r` | `cat $NODE_ROOT/proc/sys/kernel/osrelease` (`6.6.62-gentoo-dist` for gentoo-kernel-bin-6.6.62) |
//!
//! Faults (files in `$NODE_ROOT/faults/`, see `node::fault`): `emerge-fail`
//! (all or listed atoms), `emerge-delay`, `reboot-hang` (never comes back
//! from a reboot), `http-fail` (every request 503). A release whose tree
//! holds a `BROKEN` file fails every request, /healthz included
//! (`TestFleet::add_release(id, true)`).

// The harness is the API of the end-to-end tests to come; not every helper
// has a caller yet.
#![allow(dead_code)]

pub mod harness;
pub mod http;
pub mod lb;
pub mod loadgen;
pub mod node;
pub mod procs;
pub mod slot;
pub mod topology;

mod daemon;
mod e2e;
mod haproxy_semantics;
mod respec;
mod smoke;
mod unobserved;

pub use harness::{FleetOptions, TestFleet};
pub use topology::{Admin, Topology};
