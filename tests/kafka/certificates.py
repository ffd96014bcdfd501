"""Certificates made in the test: a CA, a broker certificate for 127.0.0.1, client ones."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    extension: x509.ExtensionType,
) -> x509.Certificate:
    """Valid from yesterday to tomorrow, so no clock skew fails a test; with the key
    identifiers that strict verification (Python 3.13's default) wants."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    return builder.sign(signer, hashes.SHA256())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA: its PEM certificate on disk (`cafile`), and what signs with it."""

    cafile: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        constraints = x509.BasicConstraints(ca=True, path_length=0)
        certificate = _certificate(_name(name), _name(name), key, key, constraints)
        cafile = directory / f"{name}.pem"
        cafile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(cafile, certificate, key)

    def issue(self, name: str) -> tuple[bytes, bytes]:
        """(PKCS#8 private key, certificate) in PEM for `name`, valid for 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        addresses = x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        )
        certificate = _certificate(_name(name), self.certificate.subject, key, self.key, addresses)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, certificate.public_bytes(serialization.Encoding.PEM)

    def keystore(self, path: Path, name: str) -> Path:
        """One PEM file with a new key and its certificate: what Kafka's PEM keystore reads."""
        key, certificate = self.issue(name)
        path.write_bytes(key + certificate)
        return path
