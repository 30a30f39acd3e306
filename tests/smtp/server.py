"""A real SMTP server for coffer's tests (aiosmtpd from PyPI).

Serves on 127.0.0.1 with a certificate of its own CA: STARTTLS required
(or implicit TLS with --implicit), AUTH LOGIN/PLAIN required (user
`coffer`, password from --password). Every message is parsed with Python's
email package and written to --dir as msg-N.json (envelope, subject, the
text and HTML parts) next to the raw msg-N.eml. Prints one JSON line with
the port and the CA file, then serves until its standard input closes.
"""

import argparse
import datetime
import email
import email.policy
import ipaddress
import json
import os
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer test mail CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ca_path, ctx


class Store:
    def __init__(self, directory, implicit_tls):
        self.directory = directory
        self.implicit_tls = implicit_tls
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "msg-%d" % self.count)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts[part.get_content_subtype()] = part.get_content()
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "date": str(msg["date"]) if msg["date"] else None,
            "message_id": str(msg["message-id"]) if msg["message-id"] else None,
            "content_type": msg.get_content_type(),
            "text": parts.get("plain"),
            "html": parts.get("html"),
            # aiosmtpd records STARTTLS only; an implicit-TLS listener
            # accepts nothing else.
            "tls": session.ssl is not None or self.implicit_tls,
            "authenticated": session.authenticated,
        }
        tmp = base + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.rename(tmp, base + ".json")
        return "250 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--implicit", action="store_true")
    args = ap.parse_args()
    ca_path, ctx = make_cert(args.dir)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == b"coffer"
            and auth_data.password == args.password.encode()
        )
        return AuthResult(success=ok, handled=False)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if args.implicit:
        controller = Controller(
            Store(args.dir, args.implicit), hostname="127.0.0.1", port=port, ssl_context=ctx,
            authenticator=authenticator, auth_required=True,
            # The whole connection is TLS; aiosmtpd only counts STARTTLS.
            auth_require_tls=False,
        )
    else:
        controller = Controller(
            Store(args.dir, args.implicit), hostname="127.0.0.1", port=port, tls_context=ctx,
            require_starttls=True, authenticator=authenticator, auth_required=True,
        )
    controller.start()
    print(json.dumps({"port": port, "ca": ca_path}), flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
