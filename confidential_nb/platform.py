"""The simulated platform: the root key that plays the hypervisor's part.

A Nitro enclave's attestation documents are signed by AWS's Nitro PKI with
ECDSA P-384. Here a P-384 key in the key home and a self-signed X.509
certificate for it simulate that platform. The monitor signs with the key,
and hosts pin the certificate's SHA-256 fingerprint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from .errors import AttestationError

CERTIFICATE_FILE = "root.crt"
KEY_FILE = "root.key"
_COMMON_NAME = "confidential_nb simulated platform"


def create_platform(directory: Path, write: Any) -> None:
    """Create the platform key and its self-signed certificate with `write(path, data, mode)`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _COMMON_NAME)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write(directory / KEY_FILE, pem_key, 0o600)
    write(directory / CERTIFICATE_FILE, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def load_platform_key(directory: Path) -> Any:
    """Load the platform's private key (monitor only)."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None)


def load_certificate(directory: Path) -> Any:
    """Load the platform certificate, the public half that hosts pin."""
    from cryptography import x509

    path = directory / CERTIFICATE_FILE
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise AttestationError(f"platform certificate {path} not found; start an enclave once to create the key home") from exc
    except ValueError as exc:
        raise AttestationError(f"platform certificate {path} is damaged; restore the key home from a backup") from exc


def certificate_from_der(data: bytes) -> Any:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise AttestationError("the platform certificate in the document is not valid DER") from exc


def certificate_der(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der: bytes = certificate.public_bytes(serialization.Encoding.DER)
    return der


def certificate_fingerprint(certificate: Any) -> str:
    """Return the hex SHA-256 of the certificate's DER bytes."""
    return hashlib.sha256(certificate_der(certificate)).hexdigest()


def platform_sign(key: Any, message: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature: bytes = key.sign(message, ec.ECDSA(hashes.SHA384()))
    return signature


def verify_platform_signature(certificate: Any, signature: bytes, message: bytes, subject: str) -> None:
    """Raise `AttestationError` unless the platform key of `certificate` signed `message`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp384r1":
        raise AttestationError(f"{subject}: the platform certificate does not hold a P-384 key")
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise AttestationError(f"{subject} is not signed by the platform key") from exc
