"""AWS Signature Version 4 verification, exactly as AWS (and botocore's signer) builds it.

Pure: the caller hands in the method, the raw path and query, the headers, the
body and the clock, and gets back the access key id that signed the request or
the DynamoDB error to answer. Both forms are accepted: the `Authorization`
header and the presigned query (`X-Amz-Algorithm=AWS4-HMAC-SHA256&...`). The
payload hash is always computed from the body received, so a valid signature of
another body never verifies.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_tz
from functools import lru_cache
from urllib.parse import quote, unquote

from kynamo.router.protocol import SERVICE_NS, DynamoError

ALGORITHM = "AWS4-HMAC-SHA256"
SKEW_SECONDS = 15 * 60
MAX_EXPIRES = 7 * 24 * 3600


class InvalidSignatureException(DynamoError):
    type_name = "InvalidSignatureException"
    namespace = SERVICE_NS
    default_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )


class IncompleteSignatureException(DynamoError):
    type_name = "IncompleteSignatureException"
    namespace = SERVICE_NS


class UnrecognizedClientException(DynamoError):
    type_name = "UnrecognizedClientException"
    namespace = SERVICE_NS
    default_message = "The security token included in the request is invalid."


class MissingAuthenticationTokenException(DynamoError):
    type_name = "MissingAuthenticationTokenException"
    namespace = SERVICE_NS
    default_message = "Request is missing Authentication Token"


class AccessDeniedException(DynamoError):
    type_name = "AccessDeniedException"
    namespace = SERVICE_NS


class Headers:
    """What verification needs of a header map: every value of a case-insensitive name."""

    def __init__(self, getall: Callable[[str], Iterable[str]]) -> None:
        self.getall = getall

    def get(self, name: str) -> str | None:
        values = list(self.getall(name))
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Signed:
    """The parts of a signature, from either the header or the query form."""

    access_key: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    timestamp: str  # YYYYMMDDTHHMMSSZ
    expires: int | None  # query form only
    token: str | None


def is_presigned(query: list[tuple[str, str]]) -> bool:
    return any(k == "X-Amz-Algorithm" for k, _ in query)


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """The raw query string as decoded (name, value) pairs, in order."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def _timestamp_of(headers: Headers) -> str:
    amz = headers.get("x-amz-date")
    if amz:
        return amz.strip()
    date = headers.get("date")
    parsed = parsedate_tz(date) if date else None
    if parsed is None:
        raise IncompleteSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    epoch = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _scope(credential: str, where: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise IncompleteSignatureException(
            f"{where} Credential parameter is malformed; expecting \"<access-key-id>/<date>/<region>/<service>"
            f"/aws4_request\". Credential={credential}")
    return parts[0], parts[1], parts[2], parts[3]


def from_header(authorization: str, headers: Headers) -> Signed:
    """Parse `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{algorithm}'")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, value = item.strip().partition("=")
        if eq:
            fields[name.strip()] = value.strip()
    missing = [n for n in ("Credential", "Signature", "SignedHeaders") if n not in fields]
    if missing:
        raise IncompleteSignatureException(
            " ".join(f"Authorization header requires '{n}' parameter." for n in missing)
            + f" Authorization={authorization}")
    key, date, region, service = _scope(fields["Credential"], "Authorization header")
    return Signed(key, date, region, service, fields["SignedHeaders"].split(";"), fields["Signature"],
                  _timestamp_of(headers), None, headers.get("x-amz-security-token"))


def from_query(query: list[tuple[str, str]]) -> Signed:
    q = dict(query)
    if q.get("X-Amz-Algorithm") != ALGORITHM:
        raise IncompleteSignatureException(f"Unsupported AWS 'algorithm': '{q.get('X-Amz-Algorithm')}'")
    missing = [n for n in ("X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date")
               if n not in q]
    if missing:
        raise IncompleteSignatureException(" ".join(f"AWS query-string parameters must include '{n}'."
                                                    for n in missing))
    try:
        expires = int(q.get("X-Amz-Expires", "900"))
    except ValueError:
        raise IncompleteSignatureException("X-Amz-Expires should be a number") from None
    if not 0 <= expires <= MAX_EXPIRES:
        raise IncompleteSignatureException("X-Amz-Expires must be between 0 and 604800 seconds")
    key, date, region, service = _scope(q["X-Amz-Credential"], "Query-string")
    return Signed(key, date, region, service, q["X-Amz-SignedHeaders"].split(";"), q["X-Amz-Signature"],
                  q["X-Amz-Date"], expires, q.get("X-Amz-Security-Token"))


def normalize_path(path: str) -> str:
    """RFC 3986 dot-segment removal as botocore does it, then one more URI encoding."""
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg and seg != ".":
            if seg == "..":
                if out:
                    out.pop()
            else:
                out.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return quote(first + "/".join(out) + last, safe="/~")


def canonical_query(query: list[tuple[str, str]], *, drop_signature: bool) -> str:
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in query if not (drop_signature and k == "X-Amz-Signature")
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_request(method: str, raw_path: str, query: list[tuple[str, str]], headers: Headers,
                      signed: list[str], payload_hash: str, *, presigned: bool) -> str:
    lines = []
    for name in signed:
        value = ",".join(" ".join(v.split()) for v in headers.getall(name))
        lines.append(f"{name}:{value}")
    return "\n".join([
        method.upper(),
        normalize_path(raw_path),
        canonical_query(query, drop_signature=presigned),
        "\n".join(lines) + "\n",
        ";".join(signed),
        payload_hash,
    ])


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _parse_stamp(stamp: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{stamp}'. See http://en.wikipedia.org/wiki/ISO_8601"
        ) from None


def _fmt(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def check_time(signed: Signed, now: float) -> None:
    """The 15-minute skew window (header form) or the presigned expiry (query form)."""
    at = _parse_stamp(signed.timestamp)
    if signed.timestamp[:8] != signed.date:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{signed.date}' != '{signed.timestamp[:8]}', from '{signed.timestamp}'.")
    if at - SKEW_SECONDS > now:
        raise InvalidSignatureException(
            f"Signature not yet current: {signed.timestamp} is still later than {_fmt(now + SKEW_SECONDS)} "
            f"({_fmt(now)} + 15 min.)")
    if signed.expires is not None:
        if at + signed.expires < now:
            raise InvalidSignatureException(
                f"Signature expired: {_fmt(at + signed.expires)} is now earlier than {_fmt(now)}")
    elif at + SKEW_SECONDS < now:
        raise InvalidSignatureException(
            f"Signature expired: {signed.timestamp} is now earlier than {_fmt(now - SKEW_SECONDS)} "
            f"({_fmt(now)} - 15 min.)")


def check_scope(signed: Signed, region: str | None, service: str) -> None:
    if signed.service != service:
        raise InvalidSignatureException(f"Credential should be scoped to correct service: '{service}'. ")
    if region is not None and signed.region != region:
        raise InvalidSignatureException(f"Credential should be scoped to a valid region, not '{signed.region}'. ")
    if "host" not in signed.signed_headers:
        raise InvalidSignatureException("'Host' must be a 'SignedHeader' in the AWS Authorization.")


def verify_signature(signed: Signed, secret: str, method: str, raw_path: str, query: list[tuple[str, str]],
                     headers: Headers, body: bytes) -> None:
    creq = canonical_request(method, raw_path, query, headers, signed.signed_headers,
                             hashlib.sha256(body).hexdigest(), presigned=signed.expires is not None)
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, signed.timestamp, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = signing_key(secret, signed.date, signed.region, signed.service)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signed.signature.lower()):
        raise InvalidSignatureException()


def extract(headers: Headers, query: list[tuple[str, str]]) -> Signed | None:
    """The request's signature, or None when it carries none at all."""
    authorization = headers.get("authorization")
    if authorization:
        return from_header(authorization, headers)
    if is_presigned(query):
        return from_query(query)
    return None
