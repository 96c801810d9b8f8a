"""Differential check: the same random DynamoDB calls against Kynamo and DynamoDB Local, answers compared.

Not a speed benchmark: it reuses the peers' launchers in `api.py`. DynamoDB Local is
the closest thing to the real service on this machine, so wherever the two answer
differently (an item, a count, an error's `__type` or message, the capacity
reported) Kynamo is presumed wrong until the DynamoDB documentation says otherwise.

    python benchmarks/compat.py [--ops 2000] [--seed 1] [--show 40]

Each seed is a reproducible sequence: items of every attribute type, conditional
writes, update expressions, projections, queries (every key condition, filters,
limits, both directions, pagination), scans, batches, and malformed requests. The
client is boto3 with its own parameter validation off, so the servers judge every
request. Prints each kind of difference once with a count, then a summary line;
exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api

TABLE = "compat"
NTABLE = "compat_numbers"  # a number sort key: ordering, BETWEEN and begins_with on numbers
NSKS = ["-5", "-1", "0", "0.5", "1", "2", "10", "100", "1e3"]
PKS = [f"p{i}" for i in range(4)]
SKS = [f"s{i:02d}" for i in range(12)]
NAMES = ["a", "b", "c", "n", "l", "m", "ss", "ns", "bs", "flag"]


def make_client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="compat",
        aws_secret_access_key="compat",
        config=Config(parameter_validation=False, retries={"max_attempts": 1}, read_timeout=30),
    )


# ------------------------------------------------------------------ generators
class Gen:
    """Random but reproducible requests; values stay small so conditions often hit."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def number(self) -> str:
        r = self.r
        return r.choice(["0", "1", "-1", "2", "10", "1.5", "-0.25", "3E2", "1e-3", "007", "12345678901234567890",
                         str(r.randint(-50, 50)), "0.10", "-0"])

    def scalar(self) -> dict[str, Any]:
        r = self.r
        kind = r.choice("SSNNBQZ")
        if kind == "S":
            return {"S": r.choice(["x", "y", "xy", "yx", "hello", "", "a b", "Ünï"])}
        if kind == "N":
            return {"N": self.number()}
        if kind == "B":
            return {"B": r.choice([b"\x00", b"ab", b"\xff\x01", b""])}
        if kind == "Q":
            return {"BOOL": r.random() < 0.5}
        return {"NULL": True}

    def value(self, depth: int = 0) -> dict[str, Any]:
        r = self.r
        pick = r.random()
        if depth < 2 and pick < 0.12:
            return {"L": [self.value(depth + 1) for _ in range(r.randint(0, 3))]}
        if depth < 2 and pick < 0.24:
            return {"M": {r.choice(NAMES): self.value(depth + 1) for _ in range(r.randint(0, 3))}}
        if pick < 0.30:
            return {"SS": r.sample(["x", "y", "z", "w"], r.randint(1, 3))}
        if pick < 0.36:
            return {"NS": r.sample(["1", "2", "3", "-4", "1.5"], r.randint(1, 3))}
        if pick < 0.40:
            return {"BS": r.sample([b"\x01", b"\x02", b"ab"], r.randint(1, 2))}
        return self.scalar()

    def key(self, table: str = TABLE) -> dict[str, Any]:
        sk = {"N": self.r.choice(NSKS)} if table == NTABLE else {"S": self.r.choice(SKS)}
        return {"pk": {"S": self.r.choice(PKS)}, "sk": sk}

    def item(self, table: str = TABLE) -> dict[str, Any]:
        item = self.key(table)
        for name in self.r.sample(NAMES, self.r.randint(0, 5)):
            item[name] = self.value()
        return item

    def operand(self, values: dict[str, Any], names: dict[str, str]) -> str:
        r = self.r
        if r.random() < 0.5:
            return self.path(names)
        ref = f":v{len(values)}"
        values[ref] = self.value(1)
        return ref

    def path(self, names: dict[str, str]) -> str:
        r = self.r
        name = r.choice([*NAMES, "pk", "sk"])
        if r.random() < 0.3:
            ref = f"#n{len(names)}"
            names[ref] = name
            name = ref
        if r.random() < 0.15:
            name += r.choice(["[0]", "[1]", ".a", ".b", "[0].a"])
        return name

    def condition(self, values: dict[str, Any], names: dict[str, str], depth: int = 0) -> str:
        r = self.r
        pick = r.random()
        if depth < 2 and pick < 0.15:
            op = r.choice(["AND", "OR"])
            return f"({self.condition(values, names, depth + 1)}) {op} ({self.condition(values, names, depth + 1)})"
        if depth < 2 and pick < 0.2:
            return f"NOT {self.condition(values, names, depth + 1)}"
        fn = r.choice(["cmp", "cmp", "cmp", "exists", "not_exists", "type", "begins", "contains", "size", "between",
                       "in"])
        if fn == "cmp":
            return f"{self.operand(values, names)} {r.choice(['=', '<>', '<', '<=', '>', '>='])} " \
                   f"{self.operand(values, names)}"
        if fn == "exists":
            return f"attribute_exists({self.path(names)})"
        if fn == "not_exists":
            return f"attribute_not_exists({self.path(names)})"
        if fn == "type":
            ref = f":v{len(values)}"
            values[ref] = {"S": r.choice(["S", "N", "B", "BOOL", "NULL", "L", "M", "SS", "NS", "BS", "X"])}
            return f"attribute_type({self.path(names)}, {ref})"
        if fn == "begins":
            return f"begins_with({self.path(names)}, {self.operand(values, names)})"
        if fn == "contains":
            return f"contains({self.path(names)}, {self.operand(values, names)})"
        if fn == "size":
            ref = f":v{len(values)}"
            values[ref] = {"N": str(r.randint(0, 4))}
            return f"size({self.path(names)}) {r.choice(['=', '<', '>='])} {ref}"
        if fn == "between":
            return f"{self.operand(values, names)} BETWEEN {self.operand(values, names)} AND " \
                   f"{self.operand(values, names)}"
        return f"{self.operand(values, names)} IN ({', '.join(self.operand(values, names) for _ in range(2))})"

    def update(self, values: dict[str, Any], names: dict[str, str]) -> str:
        r = self.r
        clauses: dict[str, list[str]] = {}
        used: set[str] = set()
        for _ in range(r.randint(1, 3)):
            action = r.choice(["SET", "SET", "SET", "REMOVE", "ADD", "DELETE"])
            target = self.path(names)
            if target in used:
                continue
            used.add(target)
            if action == "SET":
                form = r.choice(["v", "plus", "minus", "ine", "append"])
                if form == "v":
                    rhs = self.operand(values, names)
                elif form in ("plus", "minus"):
                    ref = f":v{len(values)}"
                    values[ref] = {"N": self.number()} if r.random() < 0.85 else self.value(1)
                    rhs = f"{self.path(names)} {'+' if form == 'plus' else '-'} {ref}"
                elif form == "ine":
                    rhs = f"if_not_exists({self.path(names)}, {self.operand(values, names)})"
                else:
                    ref = f":v{len(values)}"
                    values[ref] = {"L": [self.scalar()]} if r.random() < 0.85 else self.scalar()
                    rhs = f"list_append({self.path(names)}, {ref})"
                clauses.setdefault("SET", []).append(f"{target} = {rhs}")
            elif action == "REMOVE":
                clauses.setdefault("REMOVE", []).append(target)
            else:
                ref = f":v{len(values)}"
                if action == "ADD":
                    values[ref] = r.choice([{"N": self.number()}, {"SS": ["x", "q"]}, {"NS": ["1", "9"]},
                                            self.scalar()])
                else:
                    values[ref] = r.choice([{"SS": ["x"]}, {"NS": ["1"]}, {"S": "x"}])
                clauses.setdefault(action, []).append(f"{target} {ref}")
        return " ".join(f"{k} {', '.join(v)}" for k, v in clauses.items())

    @staticmethod
    def _exprs(req: dict[str, Any], values: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        if values:
            req["ExpressionAttributeValues"] = values
        if names:
            req["ExpressionAttributeNames"] = names
        return req

    def request(self) -> tuple[str, dict[str, Any]]:
        r = self.r
        op = r.choices(["PutItem", "UpdateItem", "DeleteItem", "GetItem", "Query", "Scan", "BatchWriteItem",
                        "BatchGetItem", "Hostile"], [20, 25, 6, 10, 20, 6, 4, 4, 5])[0]
        values: dict[str, Any] = {}
        names: dict[str, str] = {}
        table = r.choice([TABLE, TABLE, TABLE, NTABLE])
        req: dict[str, Any] = {"TableName": table}
        if op == "PutItem":
            req["Item"] = self.item(table)
            if r.random() < 0.4:
                req["ConditionExpression"] = self.condition(values, names)
            req["ReturnValues"] = r.choice(["NONE", "ALL_OLD", "NONE"])
        elif op == "UpdateItem":
            req["Key"] = self.key(table)
            if r.random() < 0.95:
                req["UpdateExpression"] = self.update(values, names)
            if r.random() < 0.3:
                req["ConditionExpression"] = self.condition(values, names)
            req["ReturnValues"] = r.choice(["NONE", "ALL_OLD", "ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"])
        elif op == "DeleteItem":
            req["Key"] = self.key(table)
            if r.random() < 0.4:
                req["ConditionExpression"] = self.condition(values, names)
            req["ReturnValues"] = r.choice(["NONE", "ALL_OLD"])
        elif op == "GetItem":
            req["Key"] = self.key(table)
            if r.random() < 0.4:
                req["ProjectionExpression"] = ", ".join(self.path(names) for _ in range(r.randint(1, 3)))
            req["ConsistentRead"] = True
        elif op == "Query":
            values[":pk"] = {"S": r.choice(PKS)}
            cond = "pk = :pk"
            form = r.choice(["none", "=", "<", "<=", ">", ">=", "between", "begins"])
            sks, kind = (NSKS, "N") if table == NTABLE else (SKS, "S")
            if form == "between":
                lo, hi = r.sample(sks, 2)
                if r.random() < 0.9:
                    lo, hi = sorted((lo, hi), key=Decimal if kind == "N" else str)
                values[":lo"], values[":hi"] = {kind: lo}, {kind: hi}
                cond += " AND sk BETWEEN :lo AND :hi"
            elif form == "begins":
                values[":b"] = {"S": r.choice(["s0", "s1", "s", "x"])}
                cond += " AND begins_with(sk, :b)"
            elif form != "none":
                values[":sk"] = {kind: r.choice(sks)}
                cond += f" AND sk {form} :sk"
            if r.random() < 0.1:
                cond = " AND ".join(reversed(cond.split(" AND ", 1))) if " AND " in cond else cond
            req["KeyConditionExpression"] = cond
            if r.random() < 0.3:
                req["FilterExpression"] = self.condition(values, names)
            if r.random() < 0.4:
                req["Limit"] = r.randint(1, 5)
            req["ScanIndexForward"] = r.random() < 0.5
            if r.random() < 0.15:
                req["Select"] = "COUNT"
            elif r.random() < 0.2:
                req["ProjectionExpression"] = ", ".join(self.path(names) for _ in range(r.randint(1, 2)))
            req["ConsistentRead"] = True
        elif op == "Scan":
            if r.random() < 0.4:
                req["FilterExpression"] = self.condition(values, names)
            if r.random() < 0.2:
                req["Select"] = "COUNT"
            elif r.random() < 0.2:
                req["ProjectionExpression"] = ", ".join(self.path(names) for _ in range(r.randint(1, 2)))
            if r.random() < 0.3:
                req["Limit"] = r.randint(1, 7)
            if r.random() < 0.2:
                req["TotalSegments"] = r.randint(1, 4)
                req["Segment"] = r.randrange(req["TotalSegments"])
            req["ConsistentRead"] = True
        elif op == "BatchWriteItem":
            batch: dict[str, list[Any]] = {}
            for tbl in r.sample([TABLE, NTABLE], r.choice([1, 1, 2])):
                keys, writes = set(), []
                for _ in range(r.randint(1, 4)):
                    if r.random() < 0.7:
                        item = self.item(tbl)
                        k = json.dumps(normalize({"pk": item["pk"], "sk": item["sk"]}), sort_keys=True)
                        writes.append({"PutRequest": {"Item": item}})
                    else:
                        key = self.key(tbl)
                        k = json.dumps(normalize(key), sort_keys=True)
                        writes.append({"DeleteRequest": {"Key": key}})
                    if k in keys and r.random() < 0.8:
                        writes.pop()
                    keys.add(k)
                batch[tbl] = writes
            out: dict[str, Any] = {"RequestItems": batch}
            if r.random() < 0.3:
                out["ReturnConsumedCapacity"] = "TOTAL"
            return op, out
        elif op == "BatchGetItem":
            request: dict[str, Any] = {}
            for tbl in r.sample([TABLE, NTABLE], r.choice([1, 1, 2])):
                keys = {json.dumps(normalize(self.key(tbl)), sort_keys=True) for _ in range(r.randint(1, 4))}
                spec: dict[str, Any] = {"Keys": [json.loads(k) for k in keys], "ConsistentRead": True}
                tnames: dict[str, str] = {}
                if r.random() < 0.3:
                    spec["ProjectionExpression"] = ", ".join(self.path(tnames) for _ in range(r.randint(1, 2)))
                    if tnames:
                        spec["ExpressionAttributeNames"] = tnames
                request[tbl] = spec
            out = {"RequestItems": request}
            if r.random() < 0.3:
                out["ReturnConsumedCapacity"] = "TOTAL"
            return op, out
        else:
            return self.hostile()
        if r.random() < 0.3:
            req["ReturnConsumedCapacity"] = r.choice(["TOTAL", "TOTAL", "INDEXES", "NONE"])
        if "ConditionExpression" in req and r.random() < 0.4:
            req["ReturnValuesOnConditionCheckFailure"] = r.choice(["ALL_OLD", "NONE"])
        if op in ("PutItem", "UpdateItem", "DeleteItem") and r.random() < 0.1:
            req["ReturnItemCollectionMetrics"] = r.choice(["SIZE", "NONE"])
        if op in ("GetItem", "Query", "Scan") and r.random() < 0.25:
            self._read_variant(op, req, table, values)
        req = self._exprs(req, values, names)
        if r.random() < 0.1:
            self._mutate(req)
        return op, req

    def _mutate(self, req: dict[str, Any]) -> None:
        """Break one expression a little (a token inserted, dropped or replaced, trailing blanks, a
        placeholder undefined or left unused): several faults in one request test which one each
        server reports first."""
        r = self.r
        fields = [f for f in EXPRESSION_FIELDS if isinstance(req.get(f), str)]
        if not fields:
            return
        field = r.choice(fields)
        tokens = re.findall(r"#?:?\w+|\S", req[field])
        how = r.choice(["insert", "insert", "drop", "replace", "replace", "blanks", "undefine", "unused"])
        i = r.randrange(len(tokens) + (1 if how == "insert" else 0)) if tokens else 0
        if how == "insert":
            tokens.insert(i, r.choice(MUTANTS))
        elif how == "drop" and tokens:
            del tokens[i]
        elif how == "replace" and tokens:
            tokens[i] = r.choice(MUTANTS)
        elif how == "blanks":
            tokens.append(r.choice([" ", "  ", "\t"]))
        elif how in ("undefine", "unused"):
            takes_values = any(f != "ProjectionExpression" for f in fields)  # else boto3 has no such member
            kind = r.choice(["ExpressionAttributeValues", "ExpressionAttributeNames"] if takes_values
                            else ["ExpressionAttributeNames"])
            table = dict(req.get(kind) or {})
            if how == "undefine" and table:
                del table[r.choice(sorted(table))]
            elif how == "unused":
                table[":unused" if kind.endswith("Values") else "#unused"] = {"S": "u"} if kind.endswith(
                    "Values") else "u"
            if table:
                req[kind] = table
            else:
                req.pop(kind, None)
            return
        req[field] = " ".join(tokens) if how != "blanks" else " ".join(tokens[:-1]) + tokens[-1]

    def _read_variant(self, op: str, req: dict[str, Any], table: str, values: dict[str, Any]) -> None:
        """Legacy AttributesToGet, every Select, and start keys a client wrote itself (good or not)."""
        r = self.r
        pick = r.random()
        if pick < 0.3 and "ProjectionExpression" not in req:
            req["AttributesToGet"] = r.sample([*NAMES, "pk", "sk"], r.randint(1, 3))
            if op != "GetItem" and r.random() < 0.5:
                req["Select"] = r.choice(["SPECIFIC_ATTRIBUTES", "ALL_ATTRIBUTES", "COUNT"])
        elif pick < 0.6 and op != "GetItem":
            req["Select"] = r.choice(["ALL_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "COUNT"])
        elif op != "GetItem":
            key = self.key(table)
            if op == "Query" and r.random() < 0.7:
                key["pk"] = values[":pk"]  # mostly inside the queried partition
            flaw = r.choice(["", "", "", "missing", "extra", "type"])
            if flaw == "missing":
                del key["sk"]
            elif flaw == "extra":
                key["a"] = {"S": "x"}
            elif flaw == "type":
                key["sk"] = {"B": b"\x01"}
            req["ExclusiveStartKey"] = key

    def hostile(self) -> tuple[str, dict[str, Any]]:
        r = self.r
        key = self.key()
        cases: list[tuple[str, dict[str, Any]]] = [
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": "p0"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "a": {"SS": []}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "a": {"SS": ["x", "x"]}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "a": {"N": "abc"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "a": {"N": "1e126"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": ""}, "sk": {"S": "x"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"N": "1"}, "sk": {"S": "x"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "a": {"S": "x", "N": "1"}}}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "a = :missing"}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "a = = b"}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET pk = :v",
                            "ExpressionAttributeValues": {":v": {"S": "z"}}}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a = :v REMOVE a",
                            "ExpressionAttributeValues": {":v": {"S": "z"}}}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a = :v",
                            "ExpressionAttributeValues": {":v": {"S": "z"}, ":unused": {"S": "u"}}}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "ADD a :v",
                            "ExpressionAttributeValues": {":v": {"L": []}}}),
            ("GetItem", {"TableName": TABLE, "Key": {"pk": {"S": "p0"}}}),
            ("GetItem", {"TableName": TABLE, "Key": {**key, "extra": {"S": "x"}}}),
            ("GetItem", {"TableName": "missing_table", "Key": key}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "sk = :s",
                       "ExpressionAttributeValues": {":s": {"S": "s01"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p OR sk = :s",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}, ":s": {"S": "s01"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p", "Limit": 0,
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Scan", {"TableName": TABLE, "Segment": 1, "TotalSegments": 1}),
            ("Scan", {"TableName": TABLE, "Select": "SPECIFIC_ATTRIBUTES"}),
            ("DeleteItem", {"TableName": TABLE, "Key": key, "ReturnValues": "ALL_NEW"}),
            ("BatchWriteItem", {"RequestItems": {TABLE: []}}),
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": "k" * 2049}, "sk": {"S": "x"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"S": "p0"}, "sk": {"S": "k" * 1025}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "big": {"S": "x" * (400 * 1024)}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "n": {"N": "1" * 39}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "n": {"N": "1e-131"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "n": {"N": "-1e126"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "deep": _nested(33)}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "deep": _nested(31)}}),
            ("PutItem", {"TableName": TABLE, "Item": {"pk": {"B": b""}, "sk": {"S": "x"}}}),
            ("PutItem", {"TableName": TABLE, "Item": {**key, "e": {"S": ""}, "b": {"B": b""}}}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ReturnValues": "BOGUS"}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "a = :v " + "AND a = :v " * 400,
                         "ExpressionAttributeValues": {":v": {"N": "1"}}}),
            ("PutItem", {"TableName": "x", "Item": key}),
            ("PutItem", {"TableName": "bad name!", "Item": key}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p", "Select": "BOGUS",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p", "Limit": -1,
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p",
                       "ExclusiveStartKey": {"pk": {"S": "p1"}, "sk": {"S": "s01"}},
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p",
                       "ExclusiveStartKey": {"pk": {"S": "p0"}}, "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": NTABLE, "KeyConditionExpression": "pk = :p AND begins_with(sk, :b)",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}, ":b": {"N": "1"}}}),
            ("Query", {"TableName": NTABLE, "KeyConditionExpression": "pk = :p AND sk > :s",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}, ":s": {"S": "1"}}}),
            ("GetItem", {"TableName": TABLE, "Key": key, "ProjectionExpression": "#nope"}),
            ("GetItem", {"TableName": TABLE, "Key": key, "ProjectionExpression": "a",
                         "ExpressionAttributeNames": {"#unused": "b"}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [key, key]}}}),
            ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": {**key, "sk": {"S": f"b{i}"}}}}
                                                         for i in range(26)]}}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a = :v",
                            "ExpressionAttributeValues": {":v": {"N": "1"}}, "ReturnValues": "SOME"}),
            ("DeleteItem", {"TableName": TABLE, "Key": {**key, "sk": {"N": "1"}}}),
            ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": key}},
                                                         {"DeleteRequest": {"Key": key}}]}}),
            ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": key},
                                                          "DeleteRequest": {"Key": key}}]}}),
            ("BatchWriteItem", {"RequestItems": {TABLE: [{"PutRequest": {"Item": {"pk": {"N": "1"},
                                                                                  "sk": {"S": "x"}}}}]}}),
            ("BatchWriteItem", {"RequestItems": {"missing_table": [{"PutRequest": {"Item": key}}]}}),
            ("BatchWriteItem", {"RequestItems": {TABLE: [{"DeleteRequest": {"Key": {"pk": {"S": "p0"}}}}]}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": []}}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [{"pk": {"S": "p0"}, "sk": {"S": f"k{i}"}}
                                                                for i in range(101)]}}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [key], "AttributesToGet": ["a"],
                                                       "ProjectionExpression": "a"}}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [key], "ProjectionExpression": "a",
                                                       "ExpressionAttributeNames": {"#x": "b"}}}}),
            ("BatchGetItem", {"RequestItems": {"missing_table": {"Keys": [key]}}}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [{"pk": {"S": "p0"}}]}}}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ReturnValues": "ALL_NEW"}),
            ("PutItem", {"Item": key}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p", "Limit": "5",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p", "ScanIndexForward": "no",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("GetItem", {"TableName": TABLE, "Key": {"pk": {"NULL": True}, "sk": {"S": "x"}}}),
            ("GetItem", {"TableName": TABLE, "Key": key, "ConsistentRead": "yes"}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a = :v",
                            "ExpressionAttributeValues": {":v": {"N": "1"}}, "ReturnValues": "ALL_NEW",
                            "ReturnValuesOnConditionCheckFailure": "ALL_NEW"}),
            ("Scan", {"TableName": TABLE, "Limit": 0}),
            ("Scan", {"TableName": TABLE, "TotalSegments": 1000001, "Segment": 0}),
            # grammar words where a name stands, a fault beside an undefined placeholder, trailing blanks
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "a = :v OR OR",
                         "ExpressionAttributeValues": {":v": {"N": "1"}}}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "a.and = :v",
                         "ExpressionAttributeValues": {":v": {"N": "1"}}}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "#n = "}),
            ("PutItem", {"TableName": TABLE, "Item": key, "ConditionExpression": "foo(a) AND a = :u"}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a = :v, remove = :v",
                            "ExpressionAttributeValues": {":v": {"N": "1"}}}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET name = :u"}),
            ("UpdateItem", {"TableName": TABLE, "Key": key, "UpdateExpression": "SET a =  "}),
            ("GetItem", {"TableName": TABLE, "Key": key, "ProjectionExpression": "a, in"}),
            ("GetItem", {"TableName": TABLE, "Key": key, "ProjectionExpression": "#n,,"}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk = :p AND and",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            ("Query", {"TableName": TABLE, "KeyConditionExpression": "pk =  ",
                       "ExpressionAttributeValues": {":p": {"S": "p0"}}}),
            # legacy AttributesToGet: beside a faulty projection, repeated, empty
            ("GetItem", {"TableName": TABLE, "Key": key, "AttributesToGet": ["a"], "ProjectionExpression": "a,,b"}),
            ("GetItem", {"TableName": TABLE, "Key": key, "AttributesToGet": ["a", "a"]}),
            ("Scan", {"TableName": TABLE, "AttributesToGet": ["a", "a"]}),
            ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [key], "AttributesToGet": ["a", "a"]}}}),
            ("GetItem", {"TableName": TABLE, "Key": key, "AttributesToGet": []}),
            ("Scan", {"TableName": TABLE, "AttributesToGet": []}),
        ]
        return r.choice(cases)


EXPRESSION_FIELDS = ("ConditionExpression", "UpdateExpression", "ProjectionExpression", "FilterExpression",
                     "KeyConditionExpression")
# What _mutate puts into an expression: grammar words, operators, placeholders nobody defined, a
# reserved word, an unknown function, a function used where it cannot be.
MUTANTS = ["AND", "OR", "NOT", ",", "=", "<>", "(", ")", ".", "[0]", "#zz", ":zz", "name", "foo(a)", "size", "IN",
           "SET", "REMOVE", "BETWEEN", "attribute_exists", "0", "a"]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(depth):
        value = {"L": [value]}
    return value


# ------------------------------------------------------------------ comparison
def number(text: Any) -> Any:
    """A number's value, not its spelling: DynamoDB Local echoes numbers nested in lists and maps
    as written ("0.10", "3E2") and keeps "-0", where DynamoDB documents one canonical form."""
    try:
        d = Decimal(text)
    except (ArithmeticError, TypeError, ValueError):
        return text
    return "0" if d == 0 else format(d.normalize(), "f") if abs(d.adjusted()) < 40 else str(d.normalize())


def normalize(value: Any) -> Any:
    """Order-free where DynamoDB promises no order: set members, map keys; bytes as hex; numbers by value."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "N" and isinstance(v, str) and len(value) == 1:
                out[k] = number(v)
            elif k == "NS" and isinstance(v, list):
                out[k] = sorted(number(n) for n in v)
            elif k == "SS" and isinstance(v, list):
                out[k] = sorted(v)
            elif k == "BS" and isinstance(v, list):
                out[k] = sorted(bytes(b).hex() for b in v)
            else:
                out[k] = normalize(v)
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def answer(client: Any, op: str, req: dict[str, Any]) -> dict[str, Any]:
    method = getattr(client, "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_"))
    try:
        out = method(**req)
    except ClientError as err:
        e = err.response.get("Error", {})
        return {"error": e.get("Code"), "message": e.get("Message"),
                "status": err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                "item": normalize(err.response.get("Item"))}
    out.pop("ResponseMetadata", None)
    if req.get("ReturnConsumedCapacity") in (None, "NONE"):
        out.pop("ConsumedCapacity", None)  # DynamoDB Local reports it for some calls unasked
    if op == "Scan" and "Items" in out:
        out["Items"] = sorted(out["Items"], key=lambda i: json.dumps(normalize(i), sort_keys=True))
    if isinstance(out.get("ConsumedCapacity"), list):  # one entry per table, in no promised order
        out["ConsumedCapacity"] = sorted(out["ConsumedCapacity"], key=lambda c: c.get("TableName", ""))
    if op == "BatchGetItem":
        for table, items in out.get("Responses", {}).items():
            out["Responses"][table] = sorted(items, key=lambda i: json.dumps(normalize(i), sort_keys=True))
    return normalize(out)


def shape(message: Any) -> str:
    """An error message's wording without its particulars, so each kind of difference counts once."""
    text = re.sub(r"(?<=[:;]) .*", "", str(message or "")) if ";" in str(message) else str(message)
    return re.sub(r"[:#][A-Za-z0-9_]+|[0-9]+", "_", text)[:90]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '.'}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: {'missing' if k not in a else json.dumps(a[k])[:200]} vs " \
                       f"{'missing' if k not in b else json.dumps(b[k])[:200]}"
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries vs {len(b)}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path or '.'}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}"


def run_query_pages(client: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A paginated query or scan read to the end: the pages' items joined, and how many pages."""
    pages, items, count = 0, [], 0
    req = dict(req)
    while True:
        out = answer(client, "Query" if "KeyConditionExpression" in req else "Scan", req)
        if "error" in out:
            return out
        pages += 1
        items.extend(out.get("Items", []))
        count += out.get("Count", 0)
        if "LastEvaluatedKey" not in out or pages > 200:
            break
        req["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return {"items": items, "count": count}


MISSING = "The provided expression refers to an attribute that does not exist in the item"
WRONG_TYPE = "An operand in the update expression has an incorrect data type"
INVALID_PATH = "The document path provided in the update expression is invalid for update"
UNDEFINED_VALUE = "An expression attribute value used in expression is not defined"
UNDEFINED_NAME = "An expression attribute name used in the document path is not defined"
OVERLAP = "Two document paths overlap"
FAULTS = "Incorrect operand type for operator or function|Invalid attribute type name found|The first operand must " \
         "be distinct|Incorrect number of operands|The BETWEEN operator requires"

# Differences kept on purpose: (Kynamo's message, DynamoDB Local's message, why). Kynamo keeps the
# wording DynamoDB itself answers with (its request validation reports constraint failures as
# "1 validation error detected: ..."), or the behaviour DynamoDB documents.
ACCEPTED = [
    (r"^1 validation error detected: Value .* at '[\w.]+' failed to satisfy constraint", r"",
     "request validation worded as DynamoDB's service answers it, not as DynamoDB Local does"),
    (r"^One or more parameter values were invalid: Duplicate value in attribute name: \w+$",
     r"^Cannot have two attributes with the same name$",
     "a repeated AttributesToGet name: the service's wording (dynalite's validations, written against it), which "
     "DynamoDB Local itself gives for BatchGetItem"),
    (r"^The Segment parameter is zero-based", r"", "DynamoDB's own wording for Segment >= TotalSegments"),
    (r"Missing the key \w+ in the item$", r"One of the required keys was not given a value",
     "DynamoDB's wording for an item without its key"),
    (r"Type mismatch for key \w+ expected: \w+ actual: \w+$", r"Type mismatch for key$",
     "DynamoDB's wording names the key and both types"),
    (r"^The provided key element does not match the schema$", r"^The number of conditions on the keys is invalid$",
     "DynamoDB answers a GetItem key without its sort key with the schema message"),
    (r"^Requested resource not found$", r"^Cannot do operations on a non-existent table$",
     "DynamoDB's ResourceNotFoundException message for item operations"),
    (r"^The parameter cannot be converted to a numeric value", r"^A value provided cannot be converted",
     "DynamoDB's wording for a malformed number"),
    (r"^Query condition missed key schema element: \w+$", r"^Query condition missed key schema element$",
     "DynamoDB names the missing key"),
    (r"contains duplicates\.$", r"contains duplicates$", "DynamoDB ends the duplicate-set message with a period"),
    (r"Two document paths (overlap|conflict)", r"Two document paths (overlap|conflict)",
     "DynamoDB Local names a pair of paths that do not overlap; Kynamo names the pair that does"),
    (r"valid types: \{B,NULL,SS,BOOL,L,BS,N,NS,S,M\}", r"valid types: \{",
     "the same type names, listed in another order"),
    (r"operator or function: attribute_type, operand type: \{[A-Z,]+\}$",
     r"operator or function: attribute_type, operand type: \{[A-Z,]+\}$",
     "a path as attribute_type's type name: the same operand types, listed in another order (DynamoDB Local's "
     "order changes from run to run)"),
    (r"AttributeValue: \{B:", r"AttributeValue: \{B:java\.nio", "DynamoDB Local prints a Java buffer object"),
    (r"Size of hashkey has exceeded the maximum size limit of ?2048 bytes$|Aggregated size of all range keys has "
     r"exceeded the size limit of 1024 bytes$", r"^Hash primary key values must be under 2048 bytes",
     "DynamoDB's wording for an oversize key names which key"),
    (r"^Attempting to store more than 38 significant digits in a Number$",
     r"^DynamoDB only supports precision up to 38 digits$", "DynamoDB's wording for a 39-digit number"),
    (r"^The provided starting key is invalid: The provided key element does not match the schema$",
     r"^Exclusive Start Key must have same size as table's key schema$",
     "DynamoDB's wording for a start key missing a key attribute (dynalite's tests agree)"),
    (r"^The provided key element does not match the schema$", r"Type mismatch for key",
     "DynamoDB answers a key of the wrong type with the schema message"),
    (r"^The provided key element does not match the schema$|Type mismatch for key \w+ expected: \w+ actual: \w+$",
     r"^Invalid attribute value type$",
     "a key attribute of a type no key can have (NULL, BOOL, a set, a list, a map): DynamoDB answers as for any "
     "wrong key type (dynalite's tests agree); DynamoDB Local says 'Invalid attribute value type'"),
    (r"^The provided starting key is invalid: The provided key element does not match the schema$",
     r"^Type mismatch for attribute to update$",
     "DynamoDB answers a start key of the wrong type with the schema message (dynalite's tests agree); "
     "DynamoDB Local's names an update"),
    (f"^Invalid \\w+Expression: ({FAULTS})", f"^Invalid \\w+Expression: ({FAULTS})",
     "an expression with several faults: each reports another first (DynamoDB Local's order is not textual "
     "and not by kind)"),
    (f"^Invalid (Projection|Update)Expression: ({UNDEFINED_NAME}|{OVERLAP})",
     f"^Invalid (Projection|Update)Expression: ({UNDEFINED_NAME}|{OVERLAP})",
     "paths that overlap and an undefined name in one expression: DynamoDB Local reports whichever comes last in "
     "the text; Kynamo the name"),
    (f"^Invalid UpdateExpression: ({UNDEFINED_VALUE}|Incorrect operand type)",
     f"^Invalid UpdateExpression: ({UNDEFINED_VALUE}|Incorrect operand type)",
     "an update with an undefined value and an operand of the wrong type: which DynamoDB Local reports depends "
     "on where each stands (swapping two SET actions swaps its answer); Kynamo reports the operand's type"),
    (f"^({MISSING}|{WRONG_TYPE}|{INVALID_PATH})$", f"^({MISSING}|{WRONG_TYPE}|{INVALID_PATH})$",
     "an update with several faults: DynamoDB Local reports the first in its hash order of attribute names "
     "(renaming an attribute changes which), Kynamo a missing parent first, then SET, REMOVE, ADD, DELETE"),
]


def _batch_capacity(a: dict[str, Any], b: dict[str, Any], req: dict[str, Any]) -> str | None:
    """DynamoDB Local bills a batch's missing items unlike its own GetItem and DeleteItem do: nothing
    for a BatchGetItem key that is not there, two units for a BatchWriteItem delete of one. Kynamo
    bills them as single calls (one unit, half for an eventual read: "a read of an item that does not
    exist still consumes capacity"), as dynalite does. Kept when that explains every unit apart."""
    if "ConsumedCapacity" not in a or "ConsumedCapacity" not in b or "error" in a or "error" in b:
        return None
    ours = {c["TableName"]: c["CapacityUnits"] for c in a["ConsumedCapacity"]}
    theirs = {c["TableName"]: c["CapacityUnits"] for c in b["ConsumedCapacity"]}
    if set(ours) != set(theirs) or first_difference({**a, "ConsumedCapacity": None},
                                                    {**b, "ConsumedCapacity": None}) is not None:
        return None
    for table, spec in req["RequestItems"].items():
        if "Keys" in spec:  # BatchGetItem: ours exceeds theirs by one (half) unit per missing key
            missing = len(spec["Keys"]) - len(a.get("Responses", {}).get(table, []))
            unit = 1.0 if spec.get("ConsistentRead") else 0.5
            if ours[table] - theirs[table] != missing * unit:
                return None
        else:  # BatchWriteItem: theirs exceeds ours by at most one unit per delete
            deletes = sum(1 for w in spec if "DeleteRequest" in w)
            if not 0 <= theirs[table] - ours[table] <= deletes:
                return None
    return ("DynamoDB Local bills a batch's missing items unlike its own GetItem/DeleteItem (nothing per "
            "missing BatchGetItem key, two units per BatchWriteItem delete of one); Kynamo bills them as single "
            "calls, as dynalite does")


def _strict_json_types(a: dict[str, Any], req: dict[str, Any]) -> str | None:
    """A string where the API wants a boolean or a number: DynamoDB's JSON deserializer refuses it
    (dynalite's tests agree); DynamoDB Local converts it, or fails with an internal error."""
    if a.get("error") != "SerializationException" or "STRING_VALUE cannot be converted" not in str(a.get("message")):
        return None
    if not any(isinstance(req.get(k), str) for k in ("Limit", "ConsistentRead", "ScanIndexForward", "Segment",
                                                      "TotalSegments")):
        return None
    return "a string for a boolean or number parameter: DynamoDB refuses it, DynamoDB Local converts it or fails"


def _value_after_dot(a: dict[str, Any], b: dict[str, Any], req: dict[str, Any]) -> str | None:
    """A :value right after a path's dot: Kynamo reports the syntax error at it; DynamoDB Local's
    parser takes it in and fails further on, or with an internal error."""
    if a.get("error") != "ValidationException" or b.get("error") != "ValidationException":
        return None
    if not any(re.search(r"\.\s*:\w", str(req.get(f, ""))) for f in EXPRESSION_FIELDS):
        return None
    if not re.search(r'Syntax error; token: ":\w+", near: "\.', str(a.get("message"))):
        return None
    return "a :value right after a dot: a syntax error at it; DynamoDB Local fails later or internally"


def _empty_attribute_list(a: dict[str, Any], req: dict[str, Any]) -> str | None:
    """An empty AttributesToGet: the API reference constrains it to at least one name (dynalite
    refuses it the same way); DynamoDB Local takes it as absent."""
    specs = [req, *(req.get("RequestItems") or {}).values()] if isinstance(req.get("RequestItems"), dict) else [req]
    if not any(isinstance(x, dict) and x.get("AttributesToGet") == [] for x in specs):
        return None
    if not re.search(r"^1 validation error detected: Value '\[\]' at '[\w.]*attributesToGet' failed to satisfy "
                     r"constraint: Member must have length greater than or equal to 1$", str(a.get("message"))):
        return None
    return "an empty AttributesToGet: DynamoDB's API allows 1 to 255 names; DynamoDB Local takes it as absent"


SEGMENT_REFUSAL = r"lie within the segment|with correct Segment"  # a start key outside the Scan's segment


def _start_at_range_end(a: dict[str, Any], b: dict[str, Any], req: dict[str, Any]) -> str | None:
    """DynamoDB Local refuses a Query whose start key is the last key its condition allows in the
    query's direction (the upper bound of <= or BETWEEN going forward, the lower bound of >= or
    BETWEEN going back). That is where a LastEvaluatedKey ends a page whose Limit was met by the
    range's last item, and DynamoDB documents it may return one there; Kynamo answers the next page,
    empty, as it must for its own pagination (or, with a filter naming a key, refuses that: a fault
    it checks after the start key). Kept when that is exactly the case."""
    if b.get("message") != "The provided starting key does not match the range key predicate":
        return None
    if "error" in a:
        if not str(a.get("message")).startswith("Filter Expression can only contain non-primary key attributes"):
            return None
    elif a.get("Count") != 0:
        return None
    if "ExclusiveStartKey" not in req:
        return None
    cond = req.get("KeyConditionExpression", "")
    values = req.get("ExpressionAttributeValues") or {}
    forward = req.get("ScanIndexForward", True)
    match = re.search(r"sk (<=|>=) (:\w+)|sk BETWEEN (:\w+) AND (:\w+)", cond)
    if match is None:
        return None
    if match.group(1):
        bound = match.group(2) if (match.group(1) == "<=") == forward else None
    else:
        bound = match.group(4) if forward else match.group(3)
    if bound is None or normalize(values.get(bound)) != normalize(req["ExclusiveStartKey"].get("sk")):
        return None
    return ("a start key at the last key of the range in the query's direction: an empty next page, as after a "
            "LastEvaluatedKey DynamoDB may return there; DynamoDB Local refuses it")


def accepted(a: dict[str, Any], b: dict[str, Any], req: dict[str, Any]) -> str | None:
    """Why a difference is kept, or None when it is not one of ACCEPTED."""
    why = _batch_capacity(a, b, req) if "RequestItems" in req else None
    if why is not None:
        return why
    if "LastEvaluatedKey" in a and "LastEvaluatedKey" not in b and a.get("ScannedCount") == req.get("Limit") \
            and first_difference({**a, "LastEvaluatedKey": None}, {**b, "LastEvaluatedKey": None}) is None:
        return ("a page that stops at Limit carries LastEvaluatedKey even when nothing follows, as DynamoDB "
                "documents; DynamoDB Local looks ahead")
    why = _start_at_range_end(a, b, req) or _strict_json_types(a, req) or _empty_attribute_list(a, req) \
        or _value_after_dot(a, b, req)
    if why is not None:
        return why
    if a.get("error") != b.get("error") or "error" not in a:
        return None
    for ours, theirs, why in ACCEPTED:
        if re.search(ours, str(a.get("message"))) and re.search(theirs, str(b.get("message"))):
            return why
    return None


def known_quirk(ky: Any, ref: Any, op: str, req: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Where DynamoDB Local departs from DynamoDB itself, set it straight and say so.

    An UpdateItem of only REMOVE/DELETE actions on a missing item creates that item (keys only) in
    DynamoDB Local; DynamoDB does not create it (Scylla's compatibility tests, run against DynamoDB,
    check this: scylladb/scylladb#5862), and neither does Kynamo. The item DynamoDB Local made is
    deleted so that later answers compare like for like.
    """
    if op != "UpdateItem" or "error" in a or "error" in b:
        return False
    words = set(re.findall(r"[A-Za-z]+", str(req.get("UpdateExpression", "")).upper()))
    if words & {"SET", "ADD"} or not words & {"REMOVE", "DELETE"}:
        return False  # (an UpdateItem with no UpdateExpression at all does create the item, in both)
    key = {"TableName": req["TableName"], "Key": req["Key"], "ConsistentRead": True}
    if "Item" in answer(ky, "GetItem", key) or "Item" not in answer(ref, "GetItem", key):
        return False
    ref.delete_item(TableName=req["TableName"], Key=req["Key"])
    return True


def scan_union(client: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Every item a Scan returns over all its pages and segments, sorted, with the total count."""
    total = int(req.get("TotalSegments") or 1)
    items: list[Any] = []
    count = 0
    for segment in range(total):
        part = {**req, "Segment": segment} if "TotalSegments" in req else dict(req)
        out = run_query_pages(client, part)
        if "error" in out:
            return out
        items.extend(out["items"])
        count += out["count"]
    return {"items": sorted(items, key=lambda i: json.dumps(i, sort_keys=True)), "count": count}


def create_table(client: Any, name: str = TABLE, sk_type: str = "S") -> None:
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": sk_type}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 120})


class Tally:
    """Compares one call's two answers and counts what differed, what is kept on purpose, and quirks."""

    def __init__(self, ky: Any, ref: Any, show: int) -> None:
        self.ky, self.ref, self.show = ky, ref, show
        self.kinds: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.quirks = self.shown = 0

    def call(self, label: str, op: str, req: dict[str, Any], *, kept_because: str | None = None) -> None:
        ky, ref = self.ky, self.ref
        a, b = answer(ky, op, req), answer(ref, op, req)
        if known_quirk(ky, ref, op, req, a, b):
            self.quirks += 1
            return
        if op == "Scan" and "ExclusiveStartKey" in req and int(req.get("TotalSegments") or 1) > 1 \
                and re.search(SEGMENT_REFUSAL, f"{a.get('message')} {b.get('message')}"):
            # Which segment holds a key is each store's own hash: that one refuses it is all there is.
            self.kept["a start key in another segment: which segment holds a key is each store's own hash"] += 1
            return
        if op == "Scan" and "error" not in a and "error" not in b and "ExclusiveStartKey" in req:
            # Which items follow a start key the client wrote is each store's own scan order: both
            # accepting it is all there is to compare.
            a, b = {"accepted": True}, {"accepted": True}
        elif op == "Scan" and "error" not in a and "error" not in b and ("Limit" in req or "TotalSegments" in req):
            # Which items make a page or a segment is each store's own order: compare the whole scan.
            a, b = scan_union(ky, req), scan_union(ref, req)
        if op in TABLE_VIEWS and "error" not in a and "error" not in b:
            a, b = TABLE_VIEWS[op](a), TABLE_VIEWS[op](b)
        d = first_difference(a, b)
        why = (kept_because or accepted(a, b, req)) if d is not None else None
        if why is not None:
            self.kept[why] += 1
            return
        if d is None and op == "Query" and "error" not in a and "Limit" in req:
            a, b = run_query_pages(ky, req), run_query_pages(ref, req)  # pages may split differently
            d = first_difference(a, b)
        if d is None:
            return
        self.differ(label, op, req, a, b, d)

    def differ(self, label: str, op: str, req: dict[str, Any], a: Any, b: Any, d: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict) and "error" in a and "error" in b:
            kind = f"{op}: {a['error']} messages: {shape(a.get('message'))} | {shape(b.get('message'))}"
        elif isinstance(a, dict) and isinstance(b, dict) and ("error" in a or "error" in b):
            kind = f"{op}: error {a.get('error')} vs {b.get('error')}: {shape(b.get('message') or '')}"
        else:
            kind = f"{op}: " + re.sub(r"\[[0-9]+\]", "[]", d.split(":")[0])
        self.kinds[kind] += 1
        if self.kinds[kind] == 1 and self.shown < self.show:
            self.shown += 1
            print(f"--- {label} {kind}\n  request: {json.dumps(normalize(req))[:600]}\n  kynamo:  "
                  f"{json.dumps(a)[:400]}\n  ddblocal: {json.dumps(b)[:400]}\n  first difference: {d}")


def _table_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What a table description must agree on (ARNs, times and ids differ by nature). A table just
    created may be CREATING in one and ACTIVE in the other: DynamoDB Local creates at once."""
    t = doc.get("TableDescription") or doc.get("Table") or {}
    pt = t.get("ProvisionedThroughput") or {}
    return {
        "TableName": t.get("TableName"),
        "KeySchema": t.get("KeySchema"),
        "AttributeDefinitions": sorted(t.get("AttributeDefinitions") or [], key=lambda a: a["AttributeName"]),
        "BillingMode": (t.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "Throughput": [pt.get("ReadCapacityUnits"), pt.get("WriteCapacityUnits")],
        "ItemCount": t.get("ItemCount"),
    }


TABLE_VIEWS = {"CreateTable": _table_view, "DescribeTable": _table_view, "UpdateTable": _table_view,
               "DeleteTable": _table_view}


def _create(name: str, **extra: Any) -> dict[str, Any]:
    req = {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
           "AttributeDefinitions": [{"AttributeName": "h", "AttributeType": "S"}],
           "KeySchema": [{"AttributeName": "h", "KeyType": "HASH"}]}
    req.update(extra)
    return {k: v for k, v in req.items() if v is not None}


# Table calls, each with the reason its answer may differ from DynamoDB Local's (None: it must not).
# Reviewed one by one: Kynamo keeps the service's own wording, and refuses what DynamoDB refuses where
# DynamoDB Local is lax.
SERVICE_WORDING = "DynamoDB's own wording for this refusal; DynamoDB Local words it its own way"
LAX = "DynamoDB refuses throughput on an on-demand table; DynamoDB Local accepts it"
TABLE_CALLS: list[tuple[str, dict[str, Any], str | None]] = [
    ("CreateTable", _create("ctl_plain"), None),
    ("CreateTable", _create("ctl_plain"), SERVICE_WORDING),  # exists already
    ("CreateTable", _create("ctl_prov", BillingMode="PROVISIONED",
                            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 7}), None),
    ("CreateTable", _create("ctl_range", AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "S"},
                                                               {"AttributeName": "r", "AttributeType": "N"}],
                            KeySchema=[{"AttributeName": "h", "KeyType": "HASH"},
                                       {"AttributeName": "r", "KeyType": "RANGE"}]), None),
    ("CreateTable", _create("ctl_bad1", BillingMode="PROVISIONED"), SERVICE_WORDING),  # no throughput
    ("CreateTable", _create("ctl_bad2", ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}),
     LAX),
    ("CreateTable", _create("ctl_bad3", AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "S"},
                                                              {"AttributeName": "x", "AttributeType": "S"}]),
     SERVICE_WORDING),
    ("CreateTable", _create("ctl_bad4", KeySchema=[{"AttributeName": "h", "KeyType": "RANGE"}]), SERVICE_WORDING),
    ("CreateTable", _create("ctl_bad5", KeySchema=[{"AttributeName": "z", "KeyType": "HASH"}]), SERVICE_WORDING),
    ("CreateTable", _create("ctl_bad6", AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "BOOL"}]),
     SERVICE_WORDING),
    ("CreateTable", _create("ctl_bad7", KeySchema=[{"AttributeName": "h", "KeyType": "HASH"},
                                                   {"AttributeName": "h", "KeyType": "RANGE"}]), SERVICE_WORDING),
    ("CreateTable", _create("ct", BillingMode=None), None),
    ("CreateTable", _create("ctl_bad8", BillingMode="SOMETIMES"), SERVICE_WORDING),
    ("CreateTable", _create("ctl_bad9", BillingMode="PROVISIONED",
                            ProvisionedThroughput={"ReadCapacityUnits": 0, "WriteCapacityUnits": 5}), SERVICE_WORDING),
    ("CreateTable", {"TableName": "ctl_bad10"}, SERVICE_WORDING),
    ("DescribeTable", {"TableName": "ctl_plain"}, None),
    ("DescribeTable", {"TableName": "ctl_prov"}, None),
    ("DescribeTable", {"TableName": "ctl_range"}, None),
    ("DescribeTable", {"TableName": "ctl_missing"}, SERVICE_WORDING),
    ("UpdateTable", {"TableName": "ctl_prov", "ProvisionedThroughput": {"ReadCapacityUnits": 9,
                                                                        "WriteCapacityUnits": 7}}, None),
    ("UpdateTable", {"TableName": "ctl_prov", "ProvisionedThroughput": {"ReadCapacityUnits": 9,
                                                                        "WriteCapacityUnits": 7}},
     SERVICE_WORDING),  # no change
    ("UpdateTable", {"TableName": "ctl_plain", "ProvisionedThroughput": {"ReadCapacityUnits": 1,
                                                                         "WriteCapacityUnits": 1}}, LAX),
    ("UpdateTable", {"TableName": "ctl_missing", "BillingMode": "PAY_PER_REQUEST"}, SERVICE_WORDING),
    ("DeleteTable", {"TableName": "ctl_missing"}, SERVICE_WORDING),
    ("ListTables", {"Limit": 0}, None),
    ("ListTables", {"Limit": 101}, None),
]


def table_phase(tally: Tally) -> None:
    """Table operations, valid and not, before the item calls (each waits for the table to settle)."""
    for i, (op, req, why) in enumerate(TABLE_CALLS):
        tally.call(f"table call #{i}", op, req, kept_because=why)
        if op in ("CreateTable", "UpdateTable") and "TableName" in req:
            for c in (tally.ky, tally.ref):  # until ACTIVE, for 30 s at most
                deadline = time.monotonic() + 30
                with contextlib.suppress(Exception):
                    while c.describe_table(TableName=req["TableName"])["Table"]["TableStatus"] != "ACTIVE" \
                            and time.monotonic() < deadline:
                        time.sleep(0.3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=2000, help="random requests to send to both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=int, default=40, help="differences printed in full (one per kind)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kynamo-compat-"))
    servers = [api.start_kynamo(work), api.start_ddblocal(work)]
    try:
        for s in servers:
            api._wait_http(s)
        ky, ref = (make_client(s.endpoint) for s in servers)
        for c in (ky, ref):
            create_table(c)
            create_table(c, NTABLE, "N")
        tally = Tally(ky, ref, args.show)
        table_phase(tally)
        gen = Gen(args.seed)
        for n in range(args.ops):
            op, req = gen.request()
            tally.call(f"#{n}", op, req)
        # The final states must match too: every item, read back by a full scan.
        for table in (TABLE, NTABLE):
            a, b = scan_union(ky, {"TableName": table, "ConsistentRead": True}), \
                scan_union(ref, {"TableName": table, "ConsistentRead": True})
            d = first_difference(a, b)
            if d:
                tally.differ("final", "Scan", {"TableName": table}, a, b, d)
        kinds, kept = tally.kinds, tally.kept
        print(f"\n{len(TABLE_CALLS)} table calls and {args.ops} random item calls, seed {args.seed}: "
              f"{sum(kinds.values())} differed ({tally.quirks} more met a known DynamoDB Local quirk, see known_quirk)")
        for kind, count in kinds.most_common():
            print(f"{count:6d}  {kind}")
        if kept:
            print(f"\n{sum(kept.values())} differences in wording kept on purpose (ACCEPTED):")
            for why, count in kept.most_common():
                print(f"{count:6d}  {why}")
        return 1 if kinds else 0
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
