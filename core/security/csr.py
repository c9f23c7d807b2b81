"""Checking a certificate signing request before anything is signed (sans-IO).

A CSR contributes only its public key: the SAN comes from the authenticated caller. Still,
a CSR that *asks* for another workload's SPIFFE ID is refused rather than silently
re-targeted, so a confused or malicious client learns it asked for what it cannot have.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pilotfish.core.security.identity import SPIFFE_SCHEME
from pilotfish.core.security.provider import CertError, Refusal

# Istio's agent makes RSA 2048 keys by default and ECDSA P-256 on request; larger RSA keys
# and P-384 are as safe and Envoy takes them. Smaller or exotic keys are refused.
RSA_SIZES = (2048, 3072, 4096)
RSA_EXPONENT = 65537
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
MAX_CSR_BYTES = 64 * 1024


def _invalid(message: str) -> CertError:
    return CertError(Refusal.INVALID_ARGUMENT, message)


def parse(pem: str) -> x509.CertificateSigningRequest:
    """A PEM PKCS#10 CSR whose signature verifies and whose key type is accepted."""
    if not pem.strip():
        raise _invalid("empty CSR: send a PEM PKCS#10 request in 'csr'")
    if len(pem) > MAX_CSR_BYTES:
        raise _invalid(f"CSR is {len(pem)} bytes; at most {MAX_CSR_BYTES} are accepted")
    if "-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        raise _invalid("CSR is not PEM (expected -----BEGIN CERTIFICATE REQUEST-----)")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise _invalid(f"CSR cannot be parsed: {exc}") from exc
    describe_key(csr)
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # unsupported signature algorithms raise from the library
        raise _invalid(f"CSR signature cannot be checked: {exc}") from exc
    if not valid:
        raise _invalid("CSR signature does not verify: the request was altered or not "
                       "signed with the key it carries")
    return csr


def describe_key(csr: x509.CertificateSigningRequest) -> str:
    """``RSA 2048`` or ``ECDSA P-256``; refuses keys a workload certificate may not have."""
    try:
        key = csr.public_key()
    except Exception as exc:
        raise _invalid(f"CSR public key cannot be read: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in RSA_SIZES:
            raise _invalid(f"CSR has an RSA {key.key_size} key; accepted: RSA "
                           f"{', '.join(map(str, RSA_SIZES))} or ECDSA P-256/P-384")
        exponent = key.public_numbers().e
        if exponent != RSA_EXPONENT:
            raise _invalid(f"CSR's RSA key has public exponent {exponent}; only "
                           f"{RSA_EXPONENT} is accepted (small exponents are unsafe)")
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = EC_CURVES.get(key.curve.name)
        if curve is None:
            raise _invalid(f"CSR has an ECDSA key on curve {key.curve.name}; accepted: "
                           "P-256 or P-384, or RSA 2048+")
        return f"ECDSA {curve}"
    kind = type(key).__name__.removeprefix("_").removesuffix("PublicKey")
    raise _invalid(f"CSR has an unsupported {kind} key; accepted: RSA 2048+ or ECDSA "
                   "P-256/P-384")


def requested_uris(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise _invalid(f"CSR extensions cannot be parsed: {exc}") from exc
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def check_identity(csr: x509.CertificateSigningRequest, spiffe_id: str) -> None:
    """Refuse a CSR whose SPIFFE URI SANs name anyone but the caller (other SANs are
    ignored, as Istio ignores them: the certificate gets the caller's ID only)."""
    others = [uri for uri in requested_uris(csr)
              if uri.startswith(SPIFFE_SCHEME) and uri != spiffe_id]
    if others:
        raise CertError(
            Refusal.PERMISSION_DENIED,
            f"CSR asks for identity {others[0]} but the caller is authenticated as "
            f"{spiffe_id}; a workload may only get its own identity")
