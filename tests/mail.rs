//! Email to a real SMTP server (aiosmtpd) over STARTTLS and implicit TLS
//! with AUTH: the message arrives with its subject, sender, recipients and
//! both parts; a wrong password is refused at once, a dead relay after the
//! retries, each with an error that names the relay.

mod common;

use std::time::Duration;

use coffer::policy::model::{Notifier, SecretRef, SmtpSecurity};
use coffer::report::mail::{self, Mail, Retry};
use common::smtp::{SmtpServer, USER};

fn notifier(
    port: u16,
    security: SmtpSecurity,
    ca: &std::path::Path,
    pw_file: &std::path::Path,
) -> Notifier {
    Notifier {
        name: "ops".into(),
        smtp_host: "127.0.0.1".into(),
        smtp_port: port,
        security,
        user: Some(USER.into()),
        password: Some(SecretRef::File(pw_file.to_path_buf())),
        from: "coffer <coffer@backup.example.com>".into(),
        to: vec![
            "ops@example.com".into(),
            "Storage Team <storage@example.com>".into(),
        ],
        send: vec![],
        compliance_schedule: None,
        ca_file: Some(ca.to_path_buf()),
    }
}

fn report() -> Mail {
    Mail {
        subject: "coffer: run 20261125T010000Z-ab12 partial (1 of 3 VMs failed)".into(),
        text: "db01  incremental  ok\nweb01  full  ok\napp01  FAILED: quiesce\n".into(),
        html: "<html><body><table><tr><td>db01</td><td>ok</td></tr><tr><td>app01</td><td style=\"color:#b00\">FAILED</td></tr></table></body></html>".into(),
    }
}

fn delivered(security: SmtpSecurity, implicit: bool) {
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("smtp-password");
    std::fs::write(&pw, "s3cret mail\n").unwrap();
    let server = SmtpServer::start(t.path(), "s3cret mail", implicit);
    let n = notifier(server.port, security, &server.ca, &pw);
    mail::send(&n, &report(), Retry::default()).unwrap();
    let got = server.messages(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["subject"], report().subject);
    assert_eq!(m["mail_from"], "coffer@backup.example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["ops@example.com", "storage@example.com"])
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    // RFC 5322: a Date, and a Message-ID `<id@host>`.
    let date = m["date"].as_str().expect("a Date header");
    chrono::DateTime::parse_from_rfc2822(date).unwrap_or_else(|e| panic!("Date {date}: {e}"));
    let id = m["message_id"].as_str().expect("a Message-ID header");
    assert!(
        id.starts_with('<') && id.ends_with('>') && id.contains('@'),
        "{id}"
    );
    assert_eq!(m["tls"], true);
    assert_eq!(m["authenticated"], true);
    assert_eq!(
        m["text"].as_str().unwrap().replace("\r\n", "\n"),
        report().text
    );
    assert!(
        m["html"]
            .as_str()
            .unwrap()
            .contains("<td style=\"color:#b00\">FAILED</td>")
    );
}

#[test]
fn a_report_arrives_over_starttls_with_auth_and_both_parts() {
    delivered(SmtpSecurity::Starttls, false);
}

#[test]
fn a_report_arrives_over_implicit_tls() {
    delivered(SmtpSecurity::Tls, true);
}

#[test]
fn a_wrong_password_is_refused_at_once_and_named() {
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("smtp-password");
    std::fs::write(&pw, "wrong").unwrap();
    let server = SmtpServer::start(t.path(), "right", false);
    let n = notifier(server.port, SmtpSecurity::Starttls, &server.ca, &pw);
    let err = mail::send(
        &n,
        &report(),
        Retry {
            attempts: 3,
            first_pause: Duration::from_secs(5),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("after 1 attempts") && err.contains("535"),
        "{err}"
    );
    assert!(server.messages(0, Duration::ZERO).is_empty());
}

#[test]
fn an_untrusted_relay_certificate_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("smtp-password");
    std::fs::write(&pw, "pw").unwrap();
    let server = SmtpServer::start(t.path(), "pw", false);
    let mut n = notifier(server.port, SmtpSecurity::Starttls, &server.ca, &pw);
    n.ca_file = None;
    let err = mail::send(
        &n,
        &report(),
        Retry {
            attempts: 1,
            first_pause: Duration::ZERO,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(server.messages(0, Duration::ZERO).is_empty());
}

#[test]
fn a_dead_relay_fails_after_the_retries_and_names_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let mut n = notifier(port, SmtpSecurity::None, &pw, &pw);
    n.ca_file = None;
    n.user = None;
    let err = mail::send(
        &n,
        &report(),
        Retry {
            attempts: 3,
            first_pause: Duration::from_millis(10),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("after 3 attempts"),
        "{err}"
    );
}
