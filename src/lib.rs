//! xivo-ha: high availability for a pair of XiVO telephony servers, as one binary.
//!
//! Map of the modules:
//! - [`cli`]: the command line (clap): global options, parsing, logging, dispatch. Each
//!   command is `<component>::command::<verb>` (e.g. `ha::command::configure`,
//!   `replication::command::run`), its `Args` beside it, returning the component's error.
//! - [`links`]: XiVO's classic command names as entry points (`install-links`).
//! - [`context`]: what every command receives: the `--root` paths, the configuration database URL,
//!   the `custom.env` file.
//! - [`paths`]: every filesystem path the program touches, under one `--root` prefix.
//! - [`settings`]: environment settings: the catalog of every variable (name, default, help,
//!   reader) that generates env/custom.env and docs/settings.md, the `custom.env` parser and
//!   envy deserialisation (environment over file), the unknown/repeated-name warnings.
//! - [`db`]: connections to PostgreSQL (tokio-postgres, TLS with rustls when asked for).
//! - [`net`]: this host's interfaces and subnets, TCP reachability checks.
//! - [`fsutil`]: atomic file writes and file errors a user can act on.
//! - [`backoff`]: the one backoff between retries (0.5 s doubling to 30 s, with jitter).
//! - [`node_id`]: this node's identity (128 random bits made once under `/var/lib/xivo-ha`).
//! - [`secret`]: passwords and URLs holding one, printed as `***`.
//! - [`throttle`]: a recurring warning logged once, then at most once per interval.
//! - [`ha`]: the HA settings: `ha.conf`, SIP expiry, provisioning backup registrar.
//! - [`sync`]: file sync master → slave over SSH (`sync`, `sync -i`, `sync --back`), and the
//!   monitor's copy-back of the slave's voicemail and recordings after a failback.
//! - [`dbreplic`]: DB Replic: cel and queue_log to XiVO CC's reporting PostgreSQL and
//!   Elasticsearch, with its HA mode.
//! - [`status`]: the HA dashboard (`xivo-ha status`, `/status`), the typed state documents each
//!   component leaves for it and for `/metrics` (`status::documents`), and their files under
//!   `/var/lib/xivo-ha/` (`status::store`).
//! - [`monit`]: monit's check files for what runs on this node (`xivo-monitoring-update`).
//! - [`monitor`]: the slave monitor (probes, verdict, Docker actions) and the master's hourly jobs.
//! - [`replication`]: configuration database replication master → slave (`db-replication`).
//! - [`doctor`]: the preflight checks of an HA pair (`xivo-ha doctor`), its report kept as
//!   `doctor.json` for `status` and the dashboard.
//! - [`http`]: the monitor's HTTP endpoint: the dashboard page `/`, `/status`, `/metrics`
//!   (Prometheus), `/healthz`.
//! - [`alert`]: alerts by mail (SMTP, lettre): failures, their recoveries, at most one mail an
//!   hour per failure; what could not be sent is shown in `status`.
//! - [`maintenance`]: maintenance mode (`xivo-ha maintenance on|off|status`): the monitor leaves
//!   the services and the hourly jobs alone until it ends.
//! - [`error`]: the program's error at the edge (a command's error), its exit codes.

pub mod alert;
pub mod backoff;
pub mod cli;
pub mod context;
pub mod db;
pub mod dbreplic;
pub mod doctor;
pub mod error;
pub mod fsutil;
pub mod ha;
pub mod http;
pub mod links;
pub mod maintenance;
pub mod monit;
pub mod monitor;
pub mod net;
pub mod node_id;
pub mod paths;
pub mod replication;
pub mod secret;
pub mod settings;
pub mod status;
pub mod sync;
pub mod throttle;

pub use error::{Error, Result};
