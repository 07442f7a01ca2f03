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
//!             (first farm of a site: apache2 + php-fpm, webstack/)
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
//! | `emerge` fetching binary packages from `PORTAGE_BINHOST` | first farm of every site (`FleetOptions::real_portage`, portage.rs): the real emerge (PyPI Portage 3.0.83, unprivileged, on `$NODE_ROOT`) fetching real gpkg packages over HTTP from the fleet's binhost, into a real `var/db/pkg`; other farms: a stand-in that records the install in `var/db/pkg`, fetches nothing, refuses source builds, a missing binhost and another profile's binhost |
//! | a binhost per hardware profile | python's http.server on 127.n.250.2:8000, `/<profile>/` = real binary packages built at test setup with `emerge --buildpkgonly` from `portage/repo` (an access log per fleet) |
//! | `qlist -ICv` (portage-utils) | lists `var/db/pkg` the same way (skipping `-MERGING-`) |
//! | `rc-service <svc> restart|reload` (OpenRC) or `systemctl` | real nodes: apache2 and php-fpm are the real processes: restart = stop + start (new PIDs), `php-fpm reload` = SIGUSR2 to the master (in-flight requests finish, then it re-executes its argv through `opt/php/current`, same PID), `apache2 reload` = graceful (SIGUSR1); a reload returns when the server logged it is ready again, and fails if it died (no `php-fpm -t` of its own, like systemd's unit). Stand-in nodes: restart restarts the web server process (new PID), `php-fpm reload` makes it re-read the active symlinks, `apache2 reload` changes nothing for PHP (as on a real node). Logged in `var/log/rc.log` |
//! | root for snapshots: `btrfs`, LVM's `lvcreate`/`lvs`/`lvremove`/`lvconvert`, `/etc/drover/hooks/<hook>` via sudo | the `sudo` stand-in hands exactly those to the node's init (`node-ctl root`, one argument per line), which runs them as root; `FleetOptions::btrfs_farms`: those nodes' root is a real Btrfs filesystem on a loop device per node (btrfs.rs), its default subvolume mounted again at every reboot |
//! | `reboot` | returns at once; 0.3 s later the web server (Apache and php-fpm on real nodes) and sshd stop (open SSH connections drop), a new boot id is written and the newest installed kernel package becomes `osrelease`; they come back after `reboot_down` (default 1 s) |
//! | Apache + PHP-FPM + the application, sessions in the farm's memcached | **first farm of every site** (`FleetOptions::real_web`, `node::WebStack::Real`): Debian's apache2 (mpm_event, 1-4 children of 8 threads, mod_proxy_fcgi to the pool's unix socket, `DocumentRoot $NODE_ROOT/srv/app/current/public` through the link, `FallbackResource /index.php`, `/fpm-status` with `Require local`) and php-fpm (3 static workers, OPcache with `validate_timestamps=0`, `process_control_timeout = 10s`) started through `opt/php/current`, both as the node user; the release's PHP app (webstack/app.php: same paths, headers and memcached sessions as `webserver.py`, spoken to with fsockopen). **Other farms**: `webserver.py`, which serves the active release and PHP version resolved at start and on reload only (like the opcode/realpath caches). Both serve `/health.php` (`release= php= pid=`) and `/fpm-status?json&full` |
//! | a release's hooks (`releases/<id>/bin/<hook>`) and the environment's database server | every test release carries `bin/migrate` (hooks/migrate: sh + the `sqlite3` CLI; one SQLite database per environment in the fleet's `hooks/` directory, shared by its nodes as a DB server would be; the migration and its `schema_migrations` row in one transaction; a lock while it runs, so `status` answers 4, not "not applied", during a run; every call logged in `hooks/log-<env>`) and `bin/warm` (hooks/warm: the warm-up marker, logged in `hooks/log-warm`) |
//! | a cold node after a switch | session pages answer `X-Warm: 0` until the node's marker `run/warm/<release>` is newer than `srv/app/current` (`GET /warm` or `bin/warm` write it; the health endpoints never do); a seeded node is warm; the load generator counts cold answers (`LoadReport::cold`) |
//! | `/opt/php/<ver>`: that PHP's FPM binary, php-fpm.conf, php.ini | `sbin/php-fpm` a copy of Debian's php-fpm8.2 (so PHP_BINARY names the tree), the conf and ini of webstack/ with `${NODE_ROOT}` paths; 8.2.27 and 8.3.14 differ only in their php.ini marker (`user_agent`) |
//! | `uname -r` | `cat $NODE_ROOT/proc/sys/kernel/osrelease` (`6.6.62-gentoo-dist` for gentoo-kernel-bin-6.6.62) |
//!
//! Real Portage costs ~2.5 s of CPU per install (about 100 processes), so
//! only the first farm of every site runs it (8 of the 16 nodes of
//! `Topology::standard()`, 2–3 per test of `packages_e2e`); the other farms
//! and the large fleets (benches/observe.rs: hundreds of nodes, `ssh_only`)
//! keep the stand-in, which costs next to nothing. Their initial packages are
//! a copy of a template root installed once by real emerge. Setup: run
//! `tests/it/fleet/portage/install-portage` once (tests/run-all does); the
//! binhost is built once per set of inputs into /tmp/drover-fleet/portage-<key>.
//!
//! Faults (files in `$NODE_ROOT/faults/`, see `node::fault`): `emerge-fail`
//! (all or listed atoms; on a real-Portage node the package's own pkg_preinst
//! dies, after the download), `emerge-delay` (a real node sleeps in
//! pkg_preinst), `reboot-hang` (never comes back from a reboot), `http-fail`
//! (every request 503), `apache-fail` (real nodes: Apache's next start fails
//! on a syntax error in its configuration). A release whose tree holds a
//! `BROKEN` file fails every PHP request, /health.php included
//! (`TestFleet::add_release(id, true)`).
//! Hook faults (files in the fleet's `hooks/`): `fail-<env>-<verb>` makes
//! `bin/migrate <verb>` print the file and exit 1; `hold-<env>-<verb>` makes it
//! wait, holding the environment's lock, until the file is removed.
//!
//! The real web stack costs, per node, about 61 MB of summed RSS after some
//! traffic (php-fpm master and 3 workers 54 MB, Apache's parent and one
//! child 9 MB; shared pages counted in every process), measured by
//! `webstack::the_init_of_a_real_node_...`;
//! the other farms keep `webserver.py` so that a standard fleet of 16 nodes
//! stays cheap on 2 cores while every site has a real farm under load.

// The harness is the API of the end-to-end tests to come; not every helper
// has a caller yet.
#![allow(dead_code)]

pub mod btrfs;
pub mod harness;
pub mod http;
pub mod lb;
pub mod loadgen;
pub mod node;
pub mod portage;
pub mod procs;
pub mod slot;
pub mod topology;

mod daemon;
mod e2e;
mod haproxy_semantics;
mod hooks_e2e;
mod hooks_exec;
mod packages_e2e;
mod respec;
mod smoke;
mod snapshots;
mod switch;
mod unobserved;
mod webstack;

pub use harness::{FleetOptions, TestFleet};
pub use topology::{Admin, Topology};
