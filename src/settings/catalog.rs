//! The one table of every setting xivo-ha reads from the site file (XiVO CC's custom.env) or
//! the environment: its name, default, one-line help and the component that reads it.
//! `env/custom.env` and `docs/settings.md` are generated from it (`xivo-ha settings
//! --custom-env` / `--markdown`), each typed settings struct is checked against it by its own
//! tests (`check_struct`), and a site file's names are checked against it ([`unknown`]).

/// Who reads a setting; one section of custom.env and one table of docs/settings.md each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Global,
    Monit,
    Monitor,
    Http,
    Replication,
    Sync,
    Alert,
    Compose,
    DbReplic,
}

impl Component {
    /// In the order of the generated files.
    pub const ALL: [Component; 9] = [
        Component::Global,
        Component::Monit,
        Component::Monitor,
        Component::Http,
        Component::Replication,
        Component::Sync,
        Component::Alert,
        Component::Compose,
        Component::DbReplic,
    ];

    /// The section title: what reads the settings (commands and classic names).
    pub fn title(self) -> &'static str {
        match self {
            Component::Global => "Global options (every command)",
            Component::Monit => {
                "Monitoring refresh (xivo-ha monitoring-update, xivo-monitoring-update)"
            }
            Component::Monitor => {
                "Slave monitor (xivo-ha monitor, xivo-check-master-status, xivo-manage-slave-services)"
            }
            Component::Http => "HTTP status and metrics (served by xivo-ha monitor)",
            Component::Replication => {
                "Configuration database replication (xivo-ha db-replication, xivo-master-slave-db-replication)"
            }
            Component::Sync => {
                "File sync (xivo-ha sync, xivo-sync; hourly from the monitor on a master)"
            }
            Component::Alert => {
                "Alert mails (the monitor, db-replication, sync, db-replic; at most one an hour per failure)"
            }
            Component::Compose => {
                "docker compose (compose/docker-compose.yml, compose/xivo-service)"
            }
            Component::DbReplic => {
                "XiVO CC and DB Replic (xivo-ha db-replic; site values written by XiVO CC's installer)"
            }
        }
    }
}

/// What applies when a setting is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// This value (written as an active line in custom.env).
    Value(&'static str),
    /// No fixed default: the help says what applies; custom.env shows the line commented out,
    /// with this example value.
    Unset { example: &'static str },
}

/// One declared setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub component: Component,
    pub default: Default,
    /// One line: what it does (and, for an unset default, what applies then).
    pub help: &'static str,
    /// False for the two settings that locate the site file itself: they come from the
    /// command line or the process environment only.
    pub site_file: bool,
}

const fn value(
    component: Component,
    name: &'static str,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        component,
        default: Default::Value(default),
        help,
        site_file: true,
    }
}

const fn unset(
    component: Component,
    name: &'static str,
    example: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        component,
        default: Default::Unset { example },
        help,
        site_file: true,
    }
}

/// Every setting xivo-ha reads, grouped by component in the order of [`Component::ALL`].
pub const SETTINGS: &[Setting] = {
    use Component::*;
    &[
        Setting {
            site_file: false,
            ..value(
                Global,
                "XIVO_HA_ROOT",
                "/",
                "Prefix of every filesystem path xivo-ha touches (a temporary directory in tests and demos); from --root or the environment only.",
            )
        },
        value(
            Global,
            "XIVO_HA_DB",
            crate::db::DEFAULT_CONFIG_DB,
            "The local XiVO configuration database (PostgreSQL URL or key=value string; sslmode=require for TLS).",
        ),
        Setting {
            site_file: false,
            ..unset(
                Global,
                "XIVO_HA_ENV_FILE",
                "/etc/docker/xivo/custom.env",
                "This settings file; unset: <XIVO_HA_ROOT>/etc/docker/xivo/custom.env; from --env-file or the environment only.",
            )
        },
        value(
            Global,
            "XIVO_HA_LOG_FORMAT",
            "human",
            "Log lines on stderr: human or json (for a log collector).",
        ),
        value(
            Global,
            "XIVO_HA_LOG",
            "info",
            "Log level, tracing's filter syntax (e.g. debug, or xivo_ha=debug,info).",
        ),
        unset(
            Global,
            "XIVO_HA_PG_CA_FILE",
            "/etc/ssl/certs/xivo-pg-ca.pem",
            "Extra CA certificates (PEM) trusted for PostgreSQL over TLS; unset: the public web roots only.",
        ),
        value(
            Monit,
            "XIVO_HA_MONITORING_CONF_DIR",
            "/etc/monit/conf.d",
            "monit's include directory, where xivo-ha writes its checks (a path on the node, under XIVO_HA_ROOT).",
        ),
        value(
            Monit,
            "XIVO_HA_MONITORING_RELOAD_COMMAND",
            "/usr/bin/monit reload",
            "The command monit runs on the host to reload itself when xivo-ha asks (absolute path, no shell).",
        ),
        value(
            Monit,
            "XIVO_HA_MONITORING_URL",
            "http://127.0.0.1:2812",
            "monit's HTTP interface, through which xivo-ha has monit reload (monitrc: set httpd port 2812 and use address localhost allow localhost).",
        ),
        unset(
            Monit,
            "XIVO_HA_MONITORING_USER",
            "admin",
            "The user of monitrc's `allow user:password`; unset: none (monit allows localhost by address).",
        ),
        unset(
            Monit,
            "XIVO_HA_MONITORING_PASSWORD",
            "",
            "That user's password (never logged nor shown).",
        ),
        value(
            Monit,
            "XIVO_HA_MONITORING_DOCKER",
            "/usr/bin/docker",
            "The docker CLI as monit on the host runs it (an absolute path).",
        ),
        unset(
            Monit,
            "XIVO_HA_MONITORING_TELEPHONY_CONTAINERS",
            "asterisk,monit",
            "The containers monit watches on an active slave (comma-separated); unset: the monitor's XIVO_HA_MONITOR_CONTAINERS.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_INTERVAL_MS",
            "200",
            "A round, in ms: the monitor re-reads ha.conf and the maintenance file every round, and the slave pings its master (one mark of the dashboard's timeline). The master probes its slave once a second whatever this is.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_SIP_INTERVAL_MS",
            "40",
            "Time between two SIP OPTIONS the slave sends its master, in ms (answers are not waited for: a late one still counts).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_DOWN_AFTER_MS",
            "1200",
            "The master is down when its SIP has not answered for this long, in ms (host down when ICMP and TCP were silent too, Asterisk dead otherwise). A master sees its slave active after as many rounds of a second with SIP answering (rounded up).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_UP_AFTER_MS",
            "3000",
            "The master is up again once its SIP has answered for this long, in ms, and the hold-down has passed. A master sees its slave standby after as many rounds of a second with its host answering and SIP silent (rounded up).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_HOLD_DOWN_MS",
            "10000",
            "Minimum time the master stays down before it may be up again, in ms (no flapping).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_ICMP_TIMEOUT_MS",
            "900",
            "How long an ICMP echo waits for its reply, in ms (a later reply is lost).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_TCP_TIMEOUT_MS",
            "900",
            "How long a TCP connect to the peer's PostgreSQL port waits, in ms.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_SIP_TIMEOUT_MS",
            "900",
            "How long a round of the master's watch of its slave (and check-master-status) waits for a SIP answer, in ms; the slave's watch takes late answers.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_PG_PORT",
            "5432",
            "The master's PostgreSQL port: the TCP path.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_SIP_PORT",
            "5060",
            "The master's SIP port (UDP).",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_CONTAINERS",
            "asterisk,monit",
            "The slave's telephony containers (started side by side, stopped in reverse order); the monitor touches no other.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_STOP_GRACE_S",
            "10",
            "docker stop grace time before SIGKILL, in s.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_START_TIMEOUT_S",
            "60",
            "How long a started container may take to run (and be healthy), in s.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_START_SETTLE_MS",
            "1500",
            "How long a started container without a health check must keep running to count as started, in ms (0: as soon as it runs).",
        ),
        unset(
            Monitor,
            "XIVO_HA_MONITOR_HOOK_PRE_START",
            "",
            "Shell command run before the services start (XiVO: xivo-create-config); unset: none.",
        ),
        unset(
            Monitor,
            "XIVO_HA_MONITOR_HOOK_POST_START",
            "",
            "Shell command run after the services started (XiVO: xivo-update-config, dhcpd-update); unset: none.",
        ),
        unset(
            Monitor,
            "XIVO_HA_MONITOR_HOOK_PRE_STOP",
            "",
            "Shell command run before the services stop; unset: none.",
        ),
        unset(
            Monitor,
            "XIVO_HA_MONITOR_HOOK_POST_STOP",
            "",
            "Shell command run after the services stopped; unset: none.",
        ),
        unset(
            Monitor,
            "XIVO_HA_MONITOR_WITNESSES",
            "",
            "Tried before a takeover (split-brain guard): IPs (ICMP echo) or IP:port (TCP connect), comma-separated; a slave none answers does not take over. Unset: the default gateway; none: no check.",
        ),
        value(
            Monitor,
            "XIVO_HA_MONITOR_DRAIN_MAX_S",
            "1800",
            "Failback: how long the slave's Asterisk may drain its calls (core stop gracefully) before it is stopped, in s; 0 stops it at once.",
        ),
        value(
            Http,
            "XIVO_HA_HTTP_LISTEN",
            "127.0.0.1:9660",
            "Where GET /status, /metrics (Prometheus) and /healthz listen; empty turns the endpoint off.",
        ),
        value(
            Replication,
            "XIVO_HA_SLAVE_DB_USER",
            "postgres",
            "The slave's PostgreSQL user the master writes with (superuser, or the grants in docs/operations.md).",
        ),
        unset(
            Replication,
            "XIVO_HA_SLAVE_DB_PASSWORD",
            "",
            "Its password (never logged nor shown); unset: none (pg_hba must then trust the master).",
        ),
        value(
            Replication,
            "XIVO_HA_SLAVE_DB_SSLMODE",
            "disable",
            "disable, or require for TLS to the slave's PostgreSQL.",
        ),
        value(
            Replication,
            "XIVO_HA_SLAVE_DB_PORT",
            "5432",
            "The slave's PostgreSQL port.",
        ),
        value(
            Replication,
            "XIVO_HA_SLAVE_DB_NAME",
            "asterisk",
            "The slave's configuration database.",
        ),
        value(
            Replication,
            "XIVO_HA_SLAVE_DB_CONNECT_TIMEOUT_S",
            "10",
            "Seconds to wait for the slave's PostgreSQL to answer.",
        ),
        value(
            Replication,
            "XIVO_HA_REPLICATION_INTERVAL_S",
            "60",
            "Seconds between two incremental replications the monitor runs on a master (1 to 3600; 3600: hourly, XiVO's cadence); the full job (replication, sync) still runs at :00.",
        ),
        unset(
            Replication,
            "XIVO_HA_MERGE_BACK_EXTRA",
            "userfeatures.enablexfer queuemember.penalty",
            "More columns whose changes made on the slave are merged back into the master before each replication (table.column, spaces or commas; the table needs a primary key); unset: the user statuses only (DND, forwards, call filters, voicemail, recording).",
        ),
        unset(
            Sync,
            "XIVO_HA_SYNC_DIRS",
            "/etc/asterisk/extensions_extra.d,/etc/xivo/asterisk,/var/lib/asterisk/agi-bin,/var/lib/asterisk/moh,/var/lib/xivo/certificates,/var/lib/xivo/sounds/acd,/var/lib/xivo/sounds/playback",
            "What the master mirrors to the slave (commas or spaces); unset: XiVO's seven directories.",
        ),
        unset(
            Sync,
            "XIVO_HA_SYNC_BACK_DIRS",
            "/var/spool/asterisk/voicemail,/var/spool/asterisk/monitor",
            "What `sync --back` brings home after a failback; unset: voicemail and call recordings.",
        ),
        value(Sync, "XIVO_HA_SSH_PORT", "22", "The slave's SSH port."),
        value(
            Sync,
            "XIVO_HA_SSH_USER",
            "root",
            "The user the master logs in as on the slave.",
        ),
        value(
            Sync,
            "XIVO_HA_SYNC_REMOTE_ROOT",
            "/",
            "The slave's tree the directories are copied into.",
        ),
        value(
            Sync,
            "XIVO_HA_SSH_AUTHORIZED_KEYS",
            ".ssh/authorized_keys",
            "The slave's authorized_keys that `sync -i` adds the key to (relative: under the user's home).",
        ),
        value(
            Sync,
            "XIVO_HA_SSH_CONFIG",
            "none",
            "ssh's -F: an ssh_config file to use, or none to ignore every ssh_config.",
        ),
        value(
            Sync,
            "XIVO_HA_SSH_CONNECT_TIMEOUT",
            "10",
            "Seconds ssh waits for the slave to answer.",
        ),
        value(
            Sync,
            "XIVO_HA_SYNC_IO_TIMEOUT",
            "300",
            "Seconds rsync waits with no data moving before it gives up.",
        ),
        value(
            Alert,
            "XIVO_HA_ALERT_SMTP",
            "127.0.0.1:25",
            "The SMTP server (host:port) the alert mails go through, the node's own postfix by default; empty turns mail off.",
        ),
        value(
            Alert,
            "XIVO_HA_ALERT_TO",
            "root@localhost",
            "Who receives the alert mails (comma-separated addresses), root as XiVO mails it.",
        ),
        unset(
            Alert,
            "XIVO_HA_ALERT_FROM",
            "xivo-ha@xivo1.example.com",
            "The alert mails' sender; unset: xivo-ha@<this node's host name>.",
        ),
        value(
            Compose,
            "XIVO_HA_VERSION",
            "latest",
            "Tag of the xivo-ha image the containers run (docker/build-local.sh tags <version> and latest).",
        ),
        unset(
            DbReplic,
            "REPORTING_DB_HOST",
            "",
            "The reporting database server that DB Replic feeds (XiVO CC's pgxivocc); required by db-replic.",
        ),
        value(DbReplic, "REPORTING_DB_PORT", "5443", "Its port."),
        value(
            DbReplic,
            "REPORTING_DB_NAME",
            "xivo_stats",
            "The reporting database.",
        ),
        value(
            DbReplic,
            "REPORTING_DB_USER",
            "asterisk",
            "The user DB Replic writes as.",
        ),
        value(
            DbReplic,
            "REPORTING_DB_PASSWORD",
            "asterisk",
            "Its password (never logged nor shown).",
        ),
        unset(
            DbReplic,
            "ELASTICSEARCH",
            "",
            "Elasticsearch, DB Replic's second sink (http(s)://host:port); required by db-replic.",
        ),
        unset(
            DbReplic,
            "ELASTICSEARCH_USER",
            "",
            "Elasticsearch user, when the cluster asks for one; unset: none.",
        ),
        unset(
            DbReplic,
            "ELASTICSEARCH_PASSWORD",
            "",
            "Its password (never logged nor shown); unset: none.",
        ),
        value(
            DbReplic,
            "IS_HA_SLAVE",
            "false",
            "true on the slave of an HA pair: DB Replic forwards queue_log and CEL only (HA mode).",
        ),
        unset(
            DbReplic,
            "DB_REPLIC_ORIGIN",
            "",
            "The origin stamped on every forwarded row ((origin, id) keys); unset: the host name.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_POLL_MS",
            "100",
            "How often DB Replic looks for new rows while it finds none, in ms (an indexed read that returns nothing: cheap); while rows arrive, twice as often; after a full batch, at once.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_BATCH_ROWS",
            "10000",
            "At most this many rows per batch (one transaction in the reporting database: larger batches commit less often in a backlog).",
        ),
        value(
            DbReplic,
            "DB_REPLIC_BATCH_BYTES",
            "5000000",
            "At most this many bytes per batch.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_CEL_INDEX",
            "cel",
            "The Elasticsearch index of the CELs.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_QUEUE_LOG_INDEX",
            "queue_log",
            "The Elasticsearch index of the queue logs.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_CONFIG_INTERVAL_S",
            "300",
            "Seconds between two refreshes of XiVO CC's configuration tables (not in HA mode).",
        ),
        value(
            DbReplic,
            "DB_REPLIC_RETRY_INITIAL_MS",
            "500",
            "First retry delay after a sink failure, in ms (doubles up to 30 s).",
        ),
        value(
            DbReplic,
            "DB_REPLIC_GAP_WAIT_MS",
            "5000",
            "The least time a batch waits for a hole in the ids, in ms; it waits longer while a transaction that may still fill the hole is open.",
        ),
        value(
            DbReplic,
            "DB_REPLIC_RECONCILE_MS",
            "300000",
            "Milliseconds between two reconciliation passes (rows a sink lacks below its checkpoint are delivered).",
        ),
    ]
};

/// The declared setting of that name.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The settings a component reads.
pub fn of(component: Component) -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(move |s| s.component == component)
}

/// Prefixes of the names that are ours: a name with one of them that is not declared is a typo.
const OUR_PREFIXES: &[&str] = &["XIVO_HA_", "DB_REPLIC_", "REPORTING_DB_", "ELASTICSEARCH"];

/// Why a site file's name is suspicious: it looks like one of ours but is not declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    /// The closest declared name, when one is a small edit away.
    pub closest: Option<&'static str>,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.closest {
            Some(closest) => write!(
                f,
                "unknown setting `{}`: did you mean `{closest}`?",
                self.name
            ),
            None => write!(
                f,
                "unknown setting `{}`: xivo-ha reads no such variable (docs/settings.md lists them)",
                self.name
            ),
        }
    }
}

/// At most this many single-character edits between a typo and the name meant.
const MAX_EDITS: usize = 3;

/// `name` when it looks like ours (one of our prefixes, or a small edit away from a declared
/// name, as `IS_HA_SLAV`) and is not declared; other names (XiVO CC's own) are not ours to judge.
pub fn unknown(name: &str) -> Option<Unknown> {
    if find(name).is_some() {
        return None;
    }
    let closest = SETTINGS
        .iter()
        .map(|s| (edit_distance(name, s.name), s.name))
        .min()
        .filter(|(distance, _)| *distance <= MAX_EDITS)
        .map(|(_, name)| name);
    let ours = OUR_PREFIXES.iter().any(|p| name.starts_with(p)) || closest.is_some();
    ours.then(|| Unknown {
        name: name.to_owned(),
        closest,
    })
}

/// Levenshtein distance (insertions, deletions, substitutions), on bytes: names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Width of custom.env's section lines.
const RULE_WIDTH: usize = 92;

/// The text of `env/custom.env`.
pub fn custom_env() -> String {
    let mut out = String::from(
        "# Every variable xivo-ha reads, with its default and what it does. On a XiVO node these lines\n\
         # go into XiVO CC's site file /etc/docker/xivo/custom.env, which docker compose hands to the\n\
         # containers (env_file) and which `xivo-ha` also reads itself (--env-file); the process\n\
         # environment wins over the file. Commented-out lines have no fixed default: the comment says\n\
         # what applies when they are unset.\n\
         # Generated from src/settings/catalog.rs: edit the table there, then run\n\
         # `cargo run -q -- settings --custom-env > env/custom.env`.\n",
    );
    for component in Component::ALL {
        let head = format!("# --- {} ", component.title());
        let dashes = RULE_WIDTH.saturating_sub(head.len()).max(2);
        out.push_str(&format!("\n{head}{}\n", "-".repeat(dashes)));
        for setting in of(component) {
            out.push_str(&format!("# {}\n", setting.help));
            match setting.default {
                Default::Value(value) => out.push_str(&format!("{}={value}\n", setting.name)),
                Default::Unset { example } => {
                    out.push_str(&format!("#{}={example}\n", setting.name))
                }
            }
        }
    }
    out
}

/// The text of `docs/settings.md`: one table per component.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Settings\n\n\
         <!-- Generated from src/settings/catalog.rs: edit the table there, then run\n     \
         `cargo run -q -- settings --markdown > docs/settings.md`. -->\n\n\
         Every variable xivo-ha reads. Each command reads them from the site file (XiVO CC's\n\
         `/etc/docker/xivo/custom.env`, or `--env-file`) and from the process environment, which\n\
         wins; a command-line option wins over both. `env/custom.env` is the same list as a file\n\
         to start from. A name in the site file that looks like one of these but is not is\n\
         warned about, with the closest declared name, and so is a name given twice.\n",
    );
    for component in Component::ALL {
        out.push_str(&format!(
            "\n## {}\n\n| Variable | Default | What it does |\n| --- | --- | --- |\n",
            component.title()
        ));
        for setting in of(component) {
            let default = match setting.default {
                Default::Value("") => "empty".to_owned(),
                Default::Value(value) => format!("`{value}`"),
                Default::Unset { .. } => "unset".to_owned(),
            };
            out.push_str(&format!(
                "| `{}` | {default} | {} |\n",
                setting.name,
                setting.help.replace('|', "\\|").replace('<', "\\<")
            ));
        }
    }
    out
}

/// The field names of a struct that serde deserialises (its `fields` list), without data.
#[cfg(test)]
fn field_names<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(std::cell::Cell<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let fields = Fields(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&fields);
    fields.0.get()
}

/// Checks a typed settings struct against the table: its fields (read as `<prefix><FIELD>`) are
/// exactly the declared settings of `component` named with `prefix` that come from the site
/// file (a component may read several structs, one prefix each), and the defaults
/// it falls back to are the table's (deserialising the table's values gives what deserialising
/// nothing gives). `required` gives a value to each setting that has no default and that the
/// struct requires. Panics with what differs: for the tests of each settings module.
#[cfg(test)]
pub(crate) fn check_struct<T>(component: Component, prefix: &str, required: &[(&str, &str)])
where
    T: serde::de::DeserializeOwned + std::fmt::Debug,
{
    let fields: std::collections::BTreeSet<String> = field_names::<T>()
        .iter()
        .map(|f| format!("{prefix}{}", f.to_uppercase()))
        .collect();
    assert!(!fields.is_empty(), "{component:?}: no struct fields found");
    let declared: std::collections::BTreeSet<String> = of(component)
        .filter(|s| s.site_file && s.name.starts_with(prefix))
        .map(|s| s.name.to_owned())
        .collect();
    assert_eq!(
        fields, declared,
        "{component:?}: the struct's variables (left) differ from the table's (right)"
    );
    let required: Vec<(String, String)> = required
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut defaults = required.clone();
    for setting in of(component).filter(|s| s.site_file && s.name.starts_with(prefix)) {
        if let Default::Value(value) = setting.default {
            defaults.push((setting.name.to_owned(), value.to_owned()));
        }
    }
    let from_table: T = envy::prefixed(prefix)
        .from_iter(defaults)
        .unwrap_or_else(|e| panic!("{component:?}: the table's defaults do not deserialise: {e}"));
    let from_nothing: T = envy::prefixed(prefix)
        .from_iter(required)
        .unwrap_or_else(|e| panic!("{component:?}: the struct needs a value: {e}"));
    assert_eq!(
        format!("{from_table:?}"),
        format!("{from_nothing:?}"),
        "{component:?}: the table's defaults (left) differ from the struct's (right)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_declared_once_with_one_line_of_help() {
        let mut seen = std::collections::BTreeSet::new();
        for setting in SETTINGS {
            assert!(seen.insert(setting.name), "{} declared twice", setting.name);
            assert!(
                !setting.help.is_empty() && !setting.help.contains('\n'),
                "{}: one line of help",
                setting.name
            );
            let valid = setting
                .name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            assert!(valid, "{} is not a variable name", setting.name);
        }
        // Grouped: the generated files list each component once.
        let order: Vec<Component> = SETTINGS.iter().map(|s| s.component).collect();
        let mut grouped = order.clone();
        grouped.dedup();
        assert_eq!(grouped, Component::ALL.to_vec());
    }

    #[test]
    fn unknown_names_that_look_like_ours_get_the_closest() {
        let typo = unknown("DB_REPLIC_ORIGN").unwrap();
        assert_eq!(typo.closest, Some("DB_REPLIC_ORIGIN"));
        assert_eq!(
            typo.to_string(),
            "unknown setting `DB_REPLIC_ORIGN`: did you mean `DB_REPLIC_ORIGIN`?"
        );
        assert_eq!(unknown("IS_HA_SLAV").unwrap().closest, Some("IS_HA_SLAVE"));
        let far = unknown("XIVO_HA_SOMETHING_ELSE_ENTIRELY").unwrap();
        assert_eq!(far.closest, None);
        assert!(far.to_string().contains("no such variable"), "{far}");
        // Declared names, and XiVO CC's own names, are not ours to judge.
        assert_eq!(unknown("DB_REPLIC_ORIGIN"), None);
        assert_eq!(unknown("XUC_HOST"), None);
        assert_eq!(unknown("POSTGRES_PASSWORD"), None);
    }

    #[test]
    fn the_public_settings_structs_are_the_catalogs() {
        check_struct::<crate::http::HttpSettings>(Component::Http, "XIVO_HA_", &[]);
        check_struct::<crate::monit::MonitSettings>(
            Component::Monit,
            crate::monit::MonitSettings::PREFIX,
            &[],
        );
        check_struct::<crate::replication::target::SlaveDbSettings>(
            Component::Replication,
            crate::replication::target::ENV_PREFIX,
            &[],
        );
    }

    #[test]
    fn the_command_lines_variables_are_the_catalogs() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let mut seen = Vec::new();
        for arg in cli.get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            let setting = find(env).unwrap_or_else(|| panic!("{env} is not in the catalog"));
            // What clap reads from the process environment only is what locates the site file.
            assert!(
                !setting.site_file,
                "{env}: clap would not read it from the site file"
            );
            let default = arg.get_default_values().first().and_then(|v| v.to_str());
            match (setting.default, default) {
                (Default::Value(value), Some(default)) => assert_eq!(value, default, "{env}"),
                (Default::Unset { .. }, None) => {}
                (table, clap) => panic!("{env}: the catalog says {table:?}, clap {clap:?}"),
            }
            seen.push(env);
        }
        let env_only: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| !s.site_file)
            .map(|s| s.name)
            .collect();
        assert_eq!(seen, env_only);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("ORIGN", "ORIGIN"), 1);
        assert_eq!(edit_distance("ORIGIN", "ORIGIN"), 0);
        assert_eq!(edit_distance("PLOL", "POLL"), 2);
        assert_eq!(edit_distance("", "ABC"), 3);
    }

    fn committed(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    #[test]
    fn env_custom_env_is_generated_from_the_table() {
        assert!(
            committed("env/custom.env") == custom_env(),
            "env/custom.env differs from src/settings/catalog.rs's table: run \
             `cargo run -q -- settings --custom-env > env/custom.env`"
        );
    }

    #[test]
    fn docs_settings_md_is_generated_from_the_table() {
        assert!(
            committed("docs/settings.md") == markdown(),
            "docs/settings.md differs from src/settings/catalog.rs's table: run \
             `cargo run -q -- settings --markdown > docs/settings.md`"
        );
    }

    #[test]
    fn the_generated_custom_env_is_a_site_file_that_declares_every_active_line() {
        let text = custom_env();
        let file = crate::settings::EnvFile::parse(std::path::Path::new("custom.env"), &text)
            .expect("custom.env parses");
        assert!(file.duplicates.is_empty(), "{:?}", file.duplicates);
        for (name, entry) in &file.entries {
            let setting = find(name).unwrap();
            assert!(
                matches!(setting.default, Default::Value(v) if v == entry.value),
                "{name}"
            );
        }
        let active = SETTINGS
            .iter()
            .filter(|s| matches!(s.default, Default::Value(_)))
            .count();
        assert_eq!(file.entries.len(), active);
    }
}
