//! SIP registration expiry in the `staticsip` general settings of the configuration database.
//! Phones must re-register within the failover window, so HA shortens the expiry.

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::ha_conf::NodeType;

/// minexpiry / maxexpiry / defaultexpiry of sip.conf's general section, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SipExpiry {
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

/// With HA (master or slave): phones re-register at least every 5 minutes.
pub const HA_EXPIRY: SipExpiry = SipExpiry {
    min: 180,
    max: 300,
    default: 240,
};

/// XiVO's defaults without HA.
pub const STANDALONE_EXPIRY: SipExpiry = SipExpiry {
    min: 60,
    max: 3600,
    default: 120,
};

impl SipExpiry {
    pub fn for_node(node_type: NodeType) -> SipExpiry {
        match node_type {
            NodeType::Disabled => STANDALONE_EXPIRY,
            NodeType::Master | NodeType::Slave => HA_EXPIRY,
        }
    }

    fn settings(&self) -> [(&'static str, u32); 3] {
        [
            ("minexpiry", self.min),
            ("maxexpiry", self.max),
            ("defaultexpiry", self.default),
        ]
    }
}

/// Whether the database has XiVO's `staticsip` table.
pub async fn has_staticsip_table(db: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    let row = db
        .query_one("SELECT to_regclass('public.staticsip') IS NOT NULL", &[])
        .await?;
    Ok(row.get(0))
}

/// The current values, as text (`None` where the row is missing).
pub async fn read(
    db: &impl GenericClient,
) -> Result<[(String, Option<String>); 3], tokio_postgres::Error> {
    let mut values = STANDALONE_EXPIRY
        .settings()
        .map(|(name, _)| (name.to_owned(), None));
    for (name, value) in values.iter_mut() {
        let row = db
            .query_opt(
                "SELECT var_val FROM staticsip
                 WHERE filename = 'sip.conf' AND category = 'general' AND var_name = $1
                 ORDER BY id LIMIT 1",
                &[&name.as_str()],
            )
            .await?;
        *value = row.and_then(|r| r.get(0));
    }
    Ok(values)
}

/// Sets the three values (inserting missing rows). Returns the names of the settings changed.
pub async fn apply(
    db: &impl GenericClient,
    expiry: SipExpiry,
) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let mut changed = Vec::new();
    for (name, value) in expiry.settings() {
        let value = value.to_string();
        let updated = db
            .execute(
                "UPDATE staticsip SET var_val = $2
                 WHERE filename = 'sip.conf' AND category = 'general' AND var_name = $1
                   AND var_val IS DISTINCT FROM $2",
                &[&name, &value],
            )
            .await?;
        if updated > 0 {
            changed.push(name);
            continue;
        }
        let exists = db
            .query_opt(
                "SELECT 1 FROM staticsip
                 WHERE filename = 'sip.conf' AND category = 'general' AND var_name = $1",
                &[&name],
            )
            .await?
            .is_some();
        if !exists {
            db.execute(
                "INSERT INTO staticsip (cat_metric, var_metric, commented, filename, category, var_name, var_val)
                 VALUES (0, 0, 0, 'sip.conf', 'general', $1, $2)",
                &[&name, &value],
            )
            .await?;
            changed.push(name);
        }
    }
    Ok(changed)
}

/// A SIP trunk registration (`staticsip` row with `var_name = 'register'`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrunkRegistration {
    /// The trunk's description when a trunk links the row, else `user@host`.
    pub trunk: String,
    /// The explicit `~expiry`, when the line has one.
    pub expiry: Option<u32>,
}

/// Splits Asterisk's `transport://user:secret:authuser@host:port/contact~expiry` into the
/// `user@host` that names it and its explicit expiry.
pub fn parse_register(value: &str) -> (String, Option<u32>) {
    let (line, expiry) = match value.rsplit_once('~') {
        Some((line, expiry)) => match expiry.trim().parse() {
            Ok(seconds) => (line, Some(seconds)),
            Err(_) => (value, None),
        },
        None => (value, None),
    };
    let line = line.split_once("://").map_or(line, |(_, rest)| rest);
    let name = match line.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            let host = host.split(['/', ':']).next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => line.split('/').next().unwrap_or_default().to_owned(),
    };
    (name, expiry)
}

/// Every active trunk registration, with the trunk's name.
pub async fn trunk_registrations(
    db: &impl GenericClient,
) -> Result<Vec<TrunkRegistration>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT s.var_val, t.description
             FROM staticsip s LEFT JOIN trunkfeatures t ON t.registerid = s.id AND t.protocol = 'sip'
             WHERE s.var_name = 'register' AND s.commented = 0
             ORDER BY s.id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let value: Option<String> = row.get(0);
            let description: Option<String> = row.get(1);
            let (name, expiry) = parse_register(value.as_deref().unwrap_or_default());
            TrunkRegistration {
                trunk: description.filter(|d| !d.is_empty()).unwrap_or(name),
                expiry,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lines_give_their_name_and_expiry() {
        assert_eq!(
            parse_register("udp://trunk2:secret2:auth2@sip2.provider.example/1000~3600"),
            ("trunk2@sip2.provider.example".into(), Some(3600))
        );
        assert_eq!(
            parse_register("trunk1:secret1@sip.provider.example:5060"),
            ("trunk1@sip.provider.example".into(), None)
        );
        assert_eq!(parse_register("u@h/contact~soon"), ("u@h".into(), None));
    }
}
