//! Sending one alert mail over SMTP with lettre (tokio, rustls): plain SMTP to a loopback
//! server (the node's own postfix), STARTTLS when a remote server offers it. Bounded in time.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::decide::Mail;
use super::settings::AlertSettings;

/// How long one mail may take (connection, dialogue) before it counts as not sent.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `mail` as `settings` say; the error is one line for the log and `status`.
pub async fn send(settings: &AlertSettings, mail: &Mail) -> Result<(), String> {
    let Some((host, port)) = &settings.smtp else {
        return Err("mail is off (XIVO_HA_ALERT_SMTP is empty)".into());
    };
    let mut builder = Message::builder()
        .from(
            settings
                .from
                .parse()
                .map_err(|e| format!("sender {}: {e}", settings.from))?,
        )
        .subject(&mail.subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        builder = builder.to(to.parse().map_err(|e| format!("recipient {to}: {e}"))?);
    }
    let message = builder
        .body(mail.body.clone())
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let tls = if loopback {
        Tls::None
    } else {
        Tls::Opportunistic(
            TlsParameters::new(host.clone()).map_err(|e| format!("TLS to {host}: {e}"))?,
        )
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(*port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT))
        .build();
    let server = format!("{host}:{port}");
    match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "SMTP server {server}: {e} (check XIVO_HA_ALERT_SMTP and that the mail server runs)"
        )),
        Err(_) => Err(format!(
            "SMTP server {server}: no answer within {} s (check XIVO_HA_ALERT_SMTP)",
            SEND_TIMEOUT.as_secs()
        )),
    }
}
