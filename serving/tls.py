"""HTTPS served by the runtime itself: the server's TLS context from PEM files.

Also writes a self-signed certificate, for tests, the benchmark and local services (it needs the
`cryptography` package, which azure-identity already brings into every image).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from serving import settings as names


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for this certificate chain and key; SystemExit naming the settings if unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Client-initiated renegotiation costs the server a handshake per request: a cheap DoS.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise SystemExit(f"serving: cannot use {names.TLS_CERT_FILE}={cert_file} with "
                         f"{names.TLS_KEY_FILE}={key_file}: {err}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def write_self_signed(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                      days: int = 30) -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (a self-signed certificate for `hosts`) into `directory`.

    The certificate is its own CA: clients trust it by using the certificate file as their CA bundle.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path
