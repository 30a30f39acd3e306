//! Sending a report by email over SMTP (`lettre`): STARTTLS by default,
//! implicit TLS, or none for a local relay; the password from a secret
//! reference; one multipart message with a plain-text and an HTML part.
//! A failed send is retried with back-off and then reported to the caller,
//! which logs it: a mail problem never fails a backup.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::policy::model::{Notifier, SmtpSecurity};

/// A rendered report, ready to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("notifier `{notifier}`: {what}")]
    Setup { notifier: String, what: String },
    #[error(
        "notifier `{notifier}`: sending to {host}:{port} failed after {attempts} attempts: {last}"
    )]
    Send {
        notifier: String,
        host: String,
        port: u16,
        attempts: u32,
        last: String,
    },
}

/// How a send is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_pause: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            first_pause: Duration::from_secs(5),
        }
    }
}

fn build(n: &Notifier, mail: &Mail) -> Result<Message, MailError> {
    let setup = |what: String| MailError::Setup {
        notifier: n.name.clone(),
        what,
    };
    let from: Mailbox = n
        .from
        .parse()
        .map_err(|e| setup(format!("sender `{}`: {e}", n.from)))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(mail.subject.clone())
        // RFC 5322 §3.6: a Date, and a Message-ID that threads and
        // de-duplicates (`<random@this host>`).
        .date_now()
        .message_id(None)
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")).to_string());
    for to in &n.to {
        let mb: Mailbox = to
            .parse()
            .map_err(|e| setup(format!("recipient `{to}`: {e}")))?;
        builder = builder.to(mb);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))
        .map_err(|e| setup(format!("building the message: {e}")))
}

fn transport(n: &Notifier) -> Result<SmtpTransport, MailError> {
    let setup = |what: String| MailError::Setup {
        notifier: n.name.clone(),
        what,
    };
    let tls_params = || -> Result<TlsParameters, MailError> {
        let mut b = TlsParameters::builder(n.smtp_host.clone());
        if let Some(ca) = &n.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| setup(format!("reading ca_file {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("ca_file {}: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| setup(format!("TLS setup: {e}")))
    };
    let tls = match n.security {
        SmtpSecurity::Starttls => Tls::Required(tls_params()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_params()?),
        SmtpSecurity::None => Tls::None,
    };
    let mut b = SmtpTransport::builder_dangerous(&n.smtp_host)
        .port(n.smtp_port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let (Some(user), Some(pw)) = (&n.user, &n.password) {
        let password = pw
            .read()
            .map_err(|e| setup(format!("SMTP password: {e}")))?;
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    Ok(b.build())
}

/// Sends `mail` through `n`, retrying transient failures.
pub fn send(n: &Notifier, mail: &Mail, retry: Retry) -> Result<(), MailError> {
    let message = build(n, mail)?;
    let smtp = transport(n)?;
    let mut pause = retry.first_pause;
    let mut last = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        match smtp.send(&message) {
            Ok(_) => return Ok(()),
            // A permanent refusal (bad address, auth refused) is not retried.
            Err(e) if e.is_permanent() => {
                return Err(MailError::Send {
                    notifier: n.name.clone(),
                    host: n.smtp_host.clone(),
                    port: n.smtp_port,
                    attempts: attempt,
                    last: chain(&e),
                });
            }
            Err(e) => last = chain(&e),
        }
        if attempt < retry.attempts {
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
    Err(MailError::Send {
        notifier: n.name.clone(),
        host: n.smtp_host.clone(),
        port: n.smtp_port,
        attempts: retry.attempts.max(1),
        last,
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}
