"""DynamoDB's JSON 1.0 wire protocol: request decoding, responses and typed errors.

botocore decides what a response means from `__type` (the part after `#`), the
HTTP status and the `x-amz-crc32` header, so every byte shape here is fixed by
what the SDKs parse, not by taste.
"""

from __future__ import annotations

import itertools
import json
import os
import zlib
from typing import Any

import orjson
from aiohttp import web

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
_NS = "com.amazonaws.dynamodb.v20120810#"
_COYOTE = "com.amazon.coral.validate#"
SERVICE_NS = "com.amazon.coral.service#"


class DynamoError(Exception):
    """An error the client sees as DynamoDB's `__type` + `message`, with extra body fields."""

    type_name = "ValidationException"
    namespace = _COYOTE
    status = 400
    default_message = ""

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"__type": self.namespace + self.type_name, "message": self.message, **self.fields}


class ValidationException(DynamoError):
    type_name = "ValidationException"
    namespace = _COYOTE


class SerializationException(DynamoError):
    type_name = "SerializationException"
    namespace = _COYOTE
    default_message = "Start of structure or map found where not expected"


class UnknownOperationException(DynamoError):
    type_name = "UnknownOperationException"
    namespace = SERVICE_NS
    default_message = ""


class ResourceNotFoundException(DynamoError):
    type_name = "ResourceNotFoundException"
    namespace = _NS
    default_message = "Requested resource not found"


class ResourceInUseException(DynamoError):
    type_name = "ResourceInUseException"
    namespace = _NS


class LimitExceededException(DynamoError):
    type_name = "LimitExceededException"
    namespace = _NS


class ConditionalCheckFailedException(DynamoError):
    type_name = "ConditionalCheckFailedException"
    namespace = _NS
    default_message = "The conditional request failed"


class ProvisionedThroughputExceededException(DynamoError):
    type_name = "ProvisionedThroughputExceededException"
    namespace = _NS
    default_message = "The level of configured provisioned throughput for the table was exceeded. " \
        "Consider increasing your provisioning level with the UpdateTable API."


class ItemCollectionSizeLimitExceededException(DynamoError):
    type_name = "ItemCollectionSizeLimitExceededException"
    namespace = _NS


class InternalServerError(DynamoError):
    type_name = "InternalServerError"
    namespace = _NS
    status = 500
    default_message = "Internal server error"


class ServiceUnavailable(DynamoError):
    """The partition could not be reached in time; SDKs retry 503s on their own."""

    type_name = "ServiceUnavailable"
    namespace = SERVICE_NS
    status = 503
    default_message = "The service is currently unavailable or busy."


# Request ids: a random per-process prefix and a counter, 32 upper-case hex digits like DynamoDB's
# (unique without drawing 16 random bytes per request).
_RID_PREFIX = os.urandom(8).hex().upper()
_rid_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter) & 0xFFFFFFFFFFFFFFFF:016X}"


def dumps(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; orjson when it can (64-bit ints, str keys, depth), else the same text from json.

    Requests stay parsed by json: orjson 3.8 crashes the process on very deep input instead of raising.
    """
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(doc: dict[str, Any], status: int = 200, rid: str | None = None) -> web.Response:
    """A response with the CRC32 botocore verifies and a request id it reports in errors."""
    return bytes_response(dumps(doc), status, rid)


def bytes_response(body: bytes, status: int = 200, rid: str | None = None) -> web.Response:
    """json_response for a body already encoded."""
    return web.Response(
        body=body,
        status=status,
        headers={
            "Content-Type": CONTENT_TYPE,
            "x-amzn-RequestId": rid or request_id(),
            "x-amz-crc32": str(zlib.crc32(body) & 0xFFFFFFFF),
        },
    )


def error_response(err: DynamoError, rid: str | None = None) -> web.Response:
    return json_response(err.body(), err.status, rid)


def _reject_constant(name: str) -> Any:
    raise SerializationException(f"Invalid JSON number literal: {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a request body; anything but a JSON object is a SerializationException."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):  # what json.loads says of a BOM, which the decoder alone would not
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        doc = _DECODER.decode(text)  # json.loads with a keyword argument builds a decoder per call
    except UnicodeDecodeError:
        raise SerializationException("Request body is not valid UTF-8") from None
    except RecursionError:
        raise SerializationException("Request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise SerializationException(f"Malformed JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(doc, dict):
        raise SerializationException("Request body must be a JSON object")
    return doc


def operation_of(target: str | None) -> str:
    """`DynamoDB_20120810.PutItem` -> `PutItem`; anything else is an unknown operation."""
    if not target or not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException()
    return target[len(TARGET_PREFIX) :]
