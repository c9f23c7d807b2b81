"""A workload key, its CSR and the CA's certificates through OpenSSL's libcrypto (sans-IO).

ztunnel makes a key and a CSR for every identity on its node and reads what the CA sends
back, and nothing more. The ``cryptography`` package would cost it some 11 MiB of memory
(its Rust extension and fifty modules); the libcrypto that Python's ``ssl`` module has
already mapped into the process does the same work for the cost of ``ctypes``. The agent,
which signs and checks far more, keeps ``cryptography`` (``workload_cert``).

What is done here: an EC P-256 key (PKCS#8 PEM out, and its SubjectPublicKeyInfo to match
the certificate against), a PKCS#10 request with an empty subject and the SPIFFE ID as a
critical URI SAN, signed with SHA-256, and, for a PEM certificate, its DER, serial, validity,
subject, issuer, URI SANs and public key. Every failure raises `LibcryptoError` naming the
OpenSSL function and OpenSSL's own error text. Needs OpenSSL 3 (Python's ``ssl`` on every
supported Linux links it).
"""

from __future__ import annotations

import calendar
import ctypes
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from pilotfish.core.security.cert_info import CertInfo

P = ctypes.c_void_p
NID_SUBJECT_ALT_NAME = 85
GEN_URI = 6
BIO_CTRL_INFO = 3  # BIO_get_mem_data
PEM_R_NO_START_LINE = 108
# What cryptography's ``rfc4514_string`` prints: RFC 2253 order and escaping, short names,
# UTF-8 left as it is (XN_FLAG_RFC2253 without ASN1_STRFLGS_ESC_MSB).
NAME_FLAGS = (0x1 | 0x2 | 0x10 | 0x100 | 0x200) | (1 << 16) | (1 << 20) | (1 << 24)


class LibcryptoError(RuntimeError):
    """An OpenSSL call failed; the message names the call and OpenSSL's reason."""


def _load(maps: str) -> ctypes.CDLL:
    """The libcrypto Python's ``_ssl`` links, found where the loader mapped it (``maps``:
    the text of /proc/self/maps), so that the process holds one copy and its OpenSSL is the
    one TLS uses (importing ``ssl`` above is what maps it)."""
    paths = {line.split()[-1] for line in maps.splitlines() if "/libcrypto.so" in line}
    if paths:
        return ctypes.CDLL(sorted(paths)[0])
    # A Python whose ssl has OpenSSL built in: the system's OpenSSL 3, loaded beside it.
    try:
        return ctypes.CDLL("libcrypto.so.3")
    except OSError as exc:
        raise LibcryptoError(f"no libcrypto is mapped in this process (Python's ssl module "
                             f"has {ssl.OPENSSL_VERSION} built in) and libcrypto.so.3 cannot "
                             f"be loaded: {exc}") from exc


with open("/proc/self/maps", encoding="ascii", errors="replace") as _maps:
    _lib = _load(_maps.read())

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "ERR_get_error": (ctypes.c_ulong, []),
    "ERR_error_string_n": (None, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]),
    "ERR_clear_error": (None, []),
    "CRYPTO_free": (None, [P, ctypes.c_char_p, ctypes.c_int]),
    "BIO_s_mem": (P, []),
    "BIO_new": (P, [P]),
    "BIO_new_mem_buf": (P, [ctypes.c_char_p, ctypes.c_int]),
    "BIO_ctrl": (ctypes.c_long, [P, ctypes.c_int, ctypes.c_long, P]),
    "BIO_free": (ctypes.c_int, [P]),
    "EVP_PKEY_CTX_new_from_name": (P, [P, ctypes.c_char_p, ctypes.c_char_p]),
    "EVP_PKEY_CTX_free": (None, [P]),
    "EVP_PKEY_keygen_init": (ctypes.c_int, [P]),
    "EVP_PKEY_CTX_set_group_name": (ctypes.c_int, [P, ctypes.c_char_p]),
    "EVP_PKEY_generate": (ctypes.c_int, [P, ctypes.POINTER(P)]),
    "EVP_PKEY_free": (None, [P]),
    "EVP_sha256": (P, []),
    "i2d_PUBKEY": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_char_p)]),
    "PEM_write_bio_PrivateKey": (ctypes.c_int, [P, P, P, P, ctypes.c_int, P, P]),
    "X509_REQ_new": (P, []),
    "X509_REQ_free": (None, [P]),
    "X509_REQ_set_version": (ctypes.c_int, [P, ctypes.c_long]),
    "X509_REQ_set_pubkey": (ctypes.c_int, [P, P]),
    "X509_REQ_add_extensions": (ctypes.c_int, [P, P]),
    "X509_REQ_sign": (ctypes.c_int, [P, P, P]),
    "PEM_write_bio_X509_REQ": (ctypes.c_int, [P, P]),
    "OPENSSL_sk_new_null": (P, []),
    "OPENSSL_sk_push": (ctypes.c_int, [P, P]),
    "OPENSSL_sk_num": (ctypes.c_int, [P]),
    "OPENSSL_sk_value": (P, [P, ctypes.c_int]),
    "OPENSSL_sk_pop_free": (None, [P, P]),
    "GENERAL_NAME_new": (P, []),
    "GENERAL_NAME_free": (None, [P]),
    "GENERAL_NAME_set0_value": (None, [P, ctypes.c_int, P]),
    "GENERAL_NAME_get0_value": (P, [P, ctypes.POINTER(ctypes.c_int)]),
    "GENERAL_NAMES_free": (None, [P]),
    "ASN1_IA5STRING_new": (P, []),
    "ASN1_STRING_set": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "ASN1_STRING_get0_data": (P, [P]),
    "ASN1_STRING_length": (ctypes.c_int, [P]),
    "X509V3_add1_i2d": (ctypes.c_int, [ctypes.POINTER(P), ctypes.c_int, P, ctypes.c_int,
                                       ctypes.c_ulong]),
    "PEM_read_bio_X509": (P, [P, P, P, P]),
    "PEM_write_bio_X509": (ctypes.c_int, [P, P]),
    "i2d_X509": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_char_p)]),
    "X509_free": (None, [P]),
    "X509_get0_serialNumber": (P, [P]),
    "ASN1_INTEGER_to_BN": (P, [P, P]),
    "BN_bn2hex": (P, [P]),
    "BN_free": (None, [P]),
    "X509_get0_notBefore": (P, [P]),
    "X509_get0_notAfter": (P, [P]),
    "ASN1_TIME_to_tm": (ctypes.c_int, [P, P]),
    "X509_get_subject_name": (P, [P]),
    "X509_get_issuer_name": (P, [P]),
    "X509_NAME_print_ex": (ctypes.c_int, [P, P, ctypes.c_int, ctypes.c_ulong]),
    "X509_get_ext_d2i": (P, [P, ctypes.c_int, P, P]),
    "X509_get0_pubkey": (P, [P]),
}


class _Lib:
    """libcrypto's functions with their C signatures, looked up once."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                function = getattr(lib, name)
            except AttributeError:
                raise LibcryptoError(f"{lib._name} has no {name} (OpenSSL 3 is needed; "
                                     f"Python's ssl has {ssl.OPENSSL_VERSION})") from None
            function.restype, function.argtypes = restype, argtypes
            setattr(self, name, function)

    def __getattr__(self, name: str) -> Callable[..., Any]:  # for the type checker
        raise AttributeError(name)


C = _Lib(_lib)
_EXTENSION_FREE = ctypes.cast(_lib.X509_EXTENSION_free, P)


def _errors() -> str:
    """OpenSSL's queued errors, oldest first (and the queue emptied)."""
    texts = []
    buffer = ctypes.create_string_buffer(256)
    while code := C.ERR_get_error():
        C.ERR_error_string_n(code, buffer, len(buffer))
        texts.append(buffer.value.decode("ascii", "replace"))
    return "; ".join(texts) or "no reason given"


def _fail(call: str) -> LibcryptoError:
    return LibcryptoError(f"{call} failed: {_errors()}")


def _check(result: Any, call: str) -> Any:
    """``result`` of ``call``, which signals failure by NULL or a value <= 0."""
    if not result or (isinstance(result, int) and result < 0):
        raise _fail(call)
    return result


@contextmanager
def _owned(pointer: int | None, free: Callable[[Any], Any], call: str) -> Iterator[int]:
    _check(pointer, call)
    assert pointer is not None
    try:
        yield pointer
    finally:
        free(pointer)


def _bio_text(write: Callable[[int], Any], call: str) -> str:
    """What ``write`` puts into a fresh memory BIO, as text."""
    with _owned(C.BIO_new(C.BIO_s_mem()), C.BIO_free, "BIO_new") as bio:
        _check(write(bio), call)
        data = ctypes.c_char_p()
        size = C.BIO_ctrl(bio, BIO_CTRL_INFO, 0, ctypes.byref(data))
        return ctypes.string_at(data, size).decode() if size > 0 else ""


def _der(i2d: Callable[..., int], thing: int, call: str) -> bytes:
    size = _check(i2d(thing, None), call)
    buffer = ctypes.create_string_buffer(size)
    out = ctypes.cast(buffer, ctypes.c_char_p)
    _check(i2d(thing, ctypes.byref(out)), call)
    return buffer.raw[:size]


@attrs.frozen
class KeyAndCsr:
    """A new private key and the request that carries its public half."""

    key_pem: str = attrs.field(repr=False)  # PKCS#8
    public_key_der: bytes  # SubjectPublicKeyInfo: what the issued certificate must hold
    csr_pem: str


def make_key_and_csr(spiffe_id: str) -> KeyAndCsr:
    """An EC P-256 key and a PEM PKCS#10 request for ``spiffe_id`` (empty subject, the ID as
    a critical URI SAN — critical because the subject is empty, RFC 5280 — SHA-256)."""
    C.ERR_clear_error()
    with _owned(C.EVP_PKEY_CTX_new_from_name(None, b"EC", None), C.EVP_PKEY_CTX_free,
                "EVP_PKEY_CTX_new_from_name(EC)") as ctx:
        _check(C.EVP_PKEY_keygen_init(ctx), "EVP_PKEY_keygen_init")
        _check(C.EVP_PKEY_CTX_set_group_name(ctx, b"P-256"),
               "EVP_PKEY_CTX_set_group_name(P-256)")
        pkey = P()
        _check(C.EVP_PKEY_generate(ctx, ctypes.byref(pkey)), "EVP_PKEY_generate")
    try:
        key_pem = _bio_text(lambda bio: C.PEM_write_bio_PrivateKey(
            bio, pkey, None, None, 0, None, None), "PEM_write_bio_PrivateKey")
        public = _der(C.i2d_PUBKEY, pkey.value or 0, "i2d_PUBKEY")
        return KeyAndCsr(key_pem, public, _csr(pkey.value or 0, spiffe_id))
    finally:
        C.EVP_PKEY_free(pkey)


def _csr(pkey: int, spiffe_id: str) -> str:
    uri = spiffe_id.encode()
    with _owned(C.X509_REQ_new(), C.X509_REQ_free, "X509_REQ_new") as req:
        _check(C.X509_REQ_set_version(req, 0), "X509_REQ_set_version")
        _check(C.X509_REQ_set_pubkey(req, pkey), "X509_REQ_set_pubkey")
        with _owned(C.OPENSSL_sk_new_null(), C.GENERAL_NAMES_free,
                    "OPENSSL_sk_new_null") as names:
            # each object goes to its owner as soon as it exists, so that a failure
            # part way frees everything with the stack
            name = _check(C.GENERAL_NAME_new(), "GENERAL_NAME_new")
            if C.OPENSSL_sk_push(names, name) <= 0:
                C.GENERAL_NAME_free(name)
                raise _fail("OPENSSL_sk_push")
            value = _check(C.ASN1_IA5STRING_new(), "ASN1_IA5STRING_new")
            C.GENERAL_NAME_set0_value(name, GEN_URI, value)
            if C.ASN1_STRING_set(value, uri, len(uri)) <= 0:
                raise _fail(f"ASN1_STRING_set({spiffe_id!r})")
            extensions = P()
            try:
                _check(C.X509V3_add1_i2d(ctypes.byref(extensions), NID_SUBJECT_ALT_NAME,
                                         names, 1, 0), "X509V3_add1_i2d(subjectAltName)")
                _check(C.X509_REQ_add_extensions(req, extensions), "X509_REQ_add_extensions")
            finally:
                if extensions.value:
                    C.OPENSSL_sk_pop_free(extensions, _EXTENSION_FREE)
        _check(C.X509_REQ_sign(req, pkey, C.EVP_sha256()), "X509_REQ_sign")
        return _bio_text(lambda bio: C.PEM_write_bio_X509_REQ(bio, req),
                         "PEM_write_bio_X509_REQ")


@attrs.frozen
class Certificate:
    """One certificate as ztunnel needs it: to serve (``pem``), to compare (``der``), to
    match against its key (``public_key_der``) and to describe (``info``)."""

    der: bytes = attrs.field(repr=False)
    pem: str = attrs.field(repr=False)
    public_key_der: bytes = attrs.field(repr=False)
    info: CertInfo


def load_certificates(text: str | bytes, where: str) -> list[Certificate]:
    """Every PEM certificate in ``text``; `LibcryptoError` naming ``where`` when there is
    none or one cannot be read."""
    data = text.encode() if isinstance(text, str) else text
    C.ERR_clear_error()
    out: list[Certificate] = []
    with _owned(C.BIO_new_mem_buf(data, len(data)), C.BIO_free, "BIO_new_mem_buf") as bio:
        while x509 := C.PEM_read_bio_X509(bio, None, None, None):
            try:
                out.append(_certificate(x509))
            finally:
                C.X509_free(x509)
    # Reading stops at the end of the text with "no start line"; anything else is damage.
    reason = _errors()
    if not out or "no start line" not in reason:
        raise LibcryptoError(f"{where}: no PEM certificate could be read "
                             f"(certificate {len(out) + 1}: {reason})")
    return out


def _certificate(x509: int) -> Certificate:
    return Certificate(
        der=_der(C.i2d_X509, x509, "i2d_X509"),
        pem=_bio_text(lambda bio: C.PEM_write_bio_X509(bio, x509), "PEM_write_bio_X509"),
        public_key_der=_der(C.i2d_PUBKEY, _check(C.X509_get0_pubkey(x509),
                                                  "X509_get0_pubkey"), "i2d_PUBKEY"),
        info=CertInfo(serial=_serial(x509),
                      not_before=_time(C.X509_get0_notBefore(x509), "notBefore"),
                      not_after=_time(C.X509_get0_notAfter(x509), "notAfter"),
                      subject=_name(C.X509_get_subject_name(x509)),
                      issuer=_name(C.X509_get_issuer_name(x509)),
                      uris=_uris(x509)))


def _serial(x509: int) -> str:
    integer = _check(C.X509_get0_serialNumber(x509), "X509_get0_serialNumber")
    with _owned(C.ASN1_INTEGER_to_BN(integer, None), C.BN_free, "ASN1_INTEGER_to_BN") as bn:
        text = _check(C.BN_bn2hex(bn), "BN_bn2hex")
        try:
            hexa = ctypes.string_at(text).decode("ascii").lower()
        finally:
            C.CRYPTO_free(text, b"libcrypto.py", 0)
    negative = hexa.startswith("-")
    hexa = hexa.lstrip("-").lstrip("0") or "0"
    return f"-{hexa}" if negative else hexa


class _Tm(ctypes.Structure):
    # glibc's struct tm: nine ints, then tm_gmtoff and tm_zone (not read, but written).
    _fields_ = [("sec", ctypes.c_int), ("min", ctypes.c_int), ("hour", ctypes.c_int),
                ("mday", ctypes.c_int), ("mon", ctypes.c_int), ("year", ctypes.c_int),
                ("wday", ctypes.c_int), ("yday", ctypes.c_int), ("isdst", ctypes.c_int),
                ("gmtoff", ctypes.c_long), ("zone", ctypes.c_char_p)]


def _time(asn1_time: int | None, field: str) -> float:
    tm = _Tm()
    _check(asn1_time, f"X509_get0_{field}")
    _check(C.ASN1_TIME_to_tm(asn1_time, ctypes.byref(tm)), f"ASN1_TIME_to_tm({field})")
    return float(calendar.timegm((tm.year + 1900, tm.mon + 1, tm.mday, tm.hour, tm.min,
                                  tm.sec)))


def _name(name: int | None) -> str:
    _check(name, "X509_get_subject_name/X509_get_issuer_name")
    return _bio_text(lambda bio: C.X509_NAME_print_ex(bio, name, 0, NAME_FLAGS) >= 0,
                     "X509_NAME_print_ex")


def _uris(x509: int) -> tuple[str, ...]:
    names = C.X509_get_ext_d2i(x509, NID_SUBJECT_ALT_NAME, None, None)
    if not names:
        C.ERR_clear_error()  # no such extension is not an error
        return ()
    try:
        uris = []
        kind = ctypes.c_int()
        for i in range(C.OPENSSL_sk_num(names)):
            value = C.GENERAL_NAME_get0_value(C.OPENSSL_sk_value(names, i),
                                              ctypes.byref(kind))
            if kind.value == GEN_URI and value:
                uris.append(ctypes.string_at(C.ASN1_STRING_get0_data(value),
                                             C.ASN1_STRING_length(value)).decode())
        return tuple(uris)
    finally:
        C.GENERAL_NAMES_free(names)
