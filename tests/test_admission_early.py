"""The router refuses a throttled table's requests early (before parsing them): same answer, auth still first.

A real `kynamo local` with access keys and a 1 WCU table whose write bucket is put
deep in debt by one 100 KB item (100 WCU charged on a 1-unit balance: refusals for
about 100 s, so nothing here depends on timing). The first refusal takes the full
path (admission decides after parsing); the next ones are answered from the table
name alone, which `kynamo_router_early_refusals_total` counts.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSRequest

from tests.router_env import LocalKynamo, error_type, make_table
from tests.test_sigv4 import _client, _code, _signed

CREDENTIALS = ("AKIDADMIN adminsecret admin\nAKIDREAD readsecret read-only\n"
               "AKIDCALM calmsecret read-write Calm\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    base = tmp_path_factory.mktemp("early")
    creds = base / "credentials"
    creds.write_text(CREDENTIALS)
    local = LocalKynamo(base / "data", extra_env={"KYNAMO_CREDENTIALS_FILE": str(creds), "KYNAMO_BURST_SECONDS": "1"})
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _send(req: AWSRequest) -> tuple[int, dict[str, str], bytes]:
    raw = urllib.request.Request(req.url, data=req.body, headers=dict(req.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(raw, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _early(env: LocalKynamo, table: str) -> float:
    with urllib.request.urlopen(env.endpoint + "/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = f'kynamo_router_early_refusals_total{{kind="write",table="{table}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


def _put(env: LocalKynamo, table: str, pk: str, *, key: str = "AKIDADMIN", secret: str = "adminsecret",
         extra: dict[str, Any] | None = None) -> AWSRequest:
    body = json.dumps({"TableName": table, "Item": {"pk": {"S": pk}, **(extra or {})}}).encode()
    return _signed(key, secret, body, url=env.endpoint + "/", op="PutItem")


def test_early_refusal_same_answer_auth_first_neighbour_unaffected(env: LocalKynamo) -> None:
    admin = _client(env, "AKIDADMIN", "adminsecret")
    admin.create_table(TableName="Hot", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                       ProvisionedThroughput={"ReadCapacityUnits": 1000, "WriteCapacityUnits": 1})
    admin.get_waiter("table_exists").wait(TableName="Hot", WaiterConfig={"Delay": 0.2, "MaxAttempts": 200})
    make_table(admin, "Calm", sk=None)
    admin.put_item(TableName="Hot", Item={"pk": {"S": "big"}, "blob": {"S": "x" * 100_000}})  # 100 WCU of debt

    # The first refusal is decided after parsing (nothing is refusing yet); the second one early.
    status1, headers1, body1 = _send(_put(env, "Hot", "p1"))
    assert _early(env, "Hot") == 0
    status2, headers2, body2 = _send(_put(env, "Hot", "p2"))
    assert _early(env, "Hot") == 1
    assert status1 == status2 == 400
    assert json.loads(body1) == json.loads(body2)
    assert error_type(json.loads(body2)) == "ProvisionedThroughputExceededException"
    assert json.loads(body2)["message"]
    for h, b in ((headers1, body1), (headers2, body2)):
        assert h["content-type"] == "application/x-amz-json-1.0"
        assert int(h["x-amz-crc32"]) == zlib.crc32(b) & 0xFFFFFFFF
        assert len(h["x-amzn-requestid"]) == 32
    assert headers1["x-amzn-requestid"] != headers2["x-amzn-requestid"]

    # boto3 sees the throttle; a body naming the table twice is left to the full path (same answer).
    assert _code(lambda: admin.put_item(TableName="Hot", Item={"pk": {"S": "p3"}})) == \
        "ProvisionedThroughputExceededException"
    early = _early(env, "Hot")
    assert early >= 2  # boto3's own retries are refused early too
    status, _, body = _send(_put(env, "Hot", "p4", extra={"TableName": {"S": "Hot"}}))
    assert (status, json.loads(body)) == (400, json.loads(body2))
    assert _early(env, "Hot") == early

    # Authentication and permissions come first: none of these is told the table is throttled.
    unsigned = AWSRequest("POST", env.endpoint + "/", data=_put(env, "Hot", "u").body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.PutItem"})
    good = _put(env, "Hot", "t")
    tampered = AWSRequest("POST", good.url, data=good.body.replace(b'"t"', b'"e"'), headers=dict(good.headers.items()))
    refused = {
        "missing signature": (unsigned, "MissingAuthenticationTokenException"),
        "wrong secret": (_put(env, "Hot", "w", secret="nope"), "InvalidSignatureException"),
        "unknown key": (_put(env, "Hot", "k", key="AKIDNOBODY"), "UnrecognizedClientException"),
        "tampered body": (tampered, "InvalidSignatureException"),
        "read-only key": (_put(env, "Hot", "r", key="AKIDREAD", secret="readsecret"), "AccessDeniedException"),
        "key for another table": (_put(env, "Hot", "c", key="AKIDCALM", secret="calmsecret"),
                                  "AccessDeniedException"),
    }
    for what, (req, expected) in refused.items():
        status, _, body = _send(req)
        assert (status, error_type(json.loads(body))) == (400, expected), what
    assert _early(env, "Hot") == early
    status, _, body = _send(_put(env, "Hot", "p5"))  # still refusing: the checks above could have failed
    assert status == 400 and error_type(json.loads(body)) == "ProvisionedThroughputExceededException"
    assert _early(env, "Hot") == early + 1

    # The neighbour and the other bucket of the same table are served as usual.
    calm = _client(env, "AKIDCALM", "calmsecret")
    for i in range(20):
        calm.put_item(TableName="Calm", Item={"pk": {"S": f"c{i}"}, "v": {"N": str(i)}})
    got = calm.get_item(TableName="Calm", Key={"pk": {"S": "c7"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"N": "7"}
    big = admin.get_item(TableName="Hot", Key={"pk": {"S": "big"}}, ConsistentRead=True)["Item"]
    assert len(big["blob"]["S"]) == 100_000
    assert _early(env, "Calm") == 0
    for pk in ("p1", "p2", "p3", "p4", "p5", "u", "w", "k", "e", "r", "c"):
        assert "Item" not in admin.get_item(TableName="Hot", Key={"pk": {"S": pk}}, ConsistentRead=True), pk


def test_early_refusal_through_aiohttp_path(env: LocalKynamo) -> None:
    """An HTTP/1.0 request is aiohttp's to parse: it is refused early there too, with the same answer."""
    admin = _client(env, "AKIDADMIN", "adminsecret")
    if "Hot" not in admin.list_tables()["TableNames"]:
        pytest.skip("needs the table of the test above")
    before = _early(env, "Hot")
    req = _put(env, "Hot", "h10")
    port = int(env.endpoint.rsplit(":", 1)[1])
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    data = f"POST / HTTP/1.0\r\n{head}Content-Length: {len(req.body)}\r\n\r\n".encode() + req.body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head_bytes, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head_bytes.split(b" ", 2)[1] == b"400", head_bytes
    assert error_type(json.loads(body)) == "ProvisionedThroughputExceededException"
    assert _early(env, "Hot") == before + 1
