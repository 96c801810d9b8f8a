"""Answers a differential run against DynamoDB Local (benchmarks/compat.py) found Kynamo giving
differently, pinned through the API with boto3. Each expected answer is DynamoDB Local's."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from router_env import ddb, kynamo, make_table  # noqa: F401

pytestmark = pytest.mark.slow
T = "compat"
K = {"pk": {"S": "doc"}, "sk": {"S": "1"}}
DOC = {**K, "a": {"N": "1"}, "m": {"M": {"x": {"N": "1"}}}, "s": {"SS": ["q"]}, "l": {"L": [{"N": "1"}]}}
KEY_SCALAR = "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: "


@pytest.fixture(scope="module", autouse=True)
def table(ddb: Any) -> str:  # noqa: F811
    return make_table(ddb, T)


@pytest.fixture(autouse=True)
def fresh(ddb: Any) -> None:  # noqa: F811
    ddb.put_item(TableName=T, Item=DOC)


def refused(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call(TableName=T, **kwargs)
    e = err.value.response["Error"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return e["Code"], e["Message"]


def update(ddb: Any, expr: str, values: dict[str, Any] | None = None, **kwargs: Any) -> tuple[str, str]:  # noqa: F811
    if values:
        kwargs["ExpressionAttributeValues"] = values
    return refused(ddb.update_item, Key=K, UpdateExpression=expr, **kwargs)


def test_ordering_operators_refuse_values_that_have_no_order(ddb: Any) -> None:  # noqa: F811
    code, msg = update(ddb, "SET b = :v", {":v": {"N": "1"}, ":t": {"BOOL": True}}, ConditionExpression="a < :t")
    assert (code, msg) == ("ValidationException", "Invalid ConditionExpression: Incorrect operand type for operator "
                           "or function; operator or function: <, operand type: BOOL")
    code, msg = update(ddb, "SET b = :v", {":v": {"N": "1"}, ":m": {"M": {}}},
                       ConditionExpression="a BETWEEN :v AND :m")
    assert msg.endswith("operator or function: BETWEEN, operand type: M")
    # Equality still compares anything: a plain condition failure.
    code, _ = update(ddb, "SET b = :v", {":v": {"N": "1"}, ":m": {"M": {}}}, ConditionExpression="a = :m")
    assert code == "ConditionalCheckFailedException"


def test_between_and_in_want_a_distinct_first_operand(ddb: Any) -> None:  # noqa: F811
    _, msg = update(ddb, "SET b = :v", {":v": {"N": "1"}}, ConditionExpression="a BETWEEN a AND :v")
    assert msg.endswith("operator: BETWEEN, first operand: [a]")
    _, msg = update(ddb, "SET b = :v", {":v": {"N": "1"}}, ConditionExpression="a IN (:v, a)")
    assert msg.endswith("operator: IN, first operand: [a]")
    _, msg = update(ddb, "SET b = if_not_exists(a, a)")
    assert msg.endswith("operator: if_not_exists, first operand: [a]")


def test_update_errors_are_worded_as_dynamodb_words_them(ddb: Any) -> None:  # noqa: F811
    assert update(ddb, "SET b = gone") == (
        "ValidationException", "The provided expression refers to an attribute that does not exist in the item")
    assert update(ddb, "SET b = a + m")[1] == "An operand in the update expression has an incorrect data type"
    assert update(ddb, "ADD a :v", {":v": {"M": {}}})[1] == (
        "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, "
        "operand type: MAP, typeSet: ALLOWED_FOR_ADD_OPERAND")
    # if_not_exists evaluates its fallback even when the attribute exists
    assert update(ddb, "SET b = if_not_exists(a, gone)")[1].startswith("The provided expression refers")
    assert ddb.get_item(TableName=T, Key=K, ConsistentRead=True)["Item"] == DOC


def test_a_missing_parent_is_reported_before_operands_and_a_remove_is_no_longer_silent(ddb: Any) -> None:  # noqa: F811
    invalid = "The document path provided in the update expression is invalid for update"
    assert update(ddb, "REMOVE nope.x")[1] == invalid
    assert update(ddb, "SET y = gone, nope.x = :v", {":v": {"N": "1"}})[1] == invalid
    # A parent of the wrong type is found only when its action runs: SET's operands first.
    assert update(ddb, "REMOVE s[0] SET y = gone")[1].startswith("The provided expression refers")
    assert update(ddb, "DELETE a :v REMOVE s[0]", {":v": {"SS": ["x"]}})[1] == invalid
    assert update(ddb, "DELETE s[0] :v", {":v": {"SS": ["x"]}})[1] == invalid  # an index into a set
    assert ddb.get_item(TableName=T, Key=K, ConsistentRead=True)["Item"] == DOC


def test_no_expression_reaches_inside_a_key_attribute(ddb: Any) -> None:  # noqa: F811
    assert refused(ddb.get_item, Key=K, ProjectionExpression="a, sk[0]") == ("ValidationException",
                                                                             KEY_SCALAR + "sk")
    assert refused(ddb.put_item, Item=DOC, ConditionExpression="attribute_exists(pk.x)")[1] == KEY_SCALAR + "pk"
    assert update(ddb, "SET b = pk.y", ConditionExpression="attribute_exists(a)")[1] == KEY_SCALAR + "pk"
    # An update's operands are checked after its condition, as DynamoDB does.
    assert update(ddb, "SET b = pk.y", ConditionExpression="attribute_exists(gone)")[0] == \
        "ConditionalCheckFailedException"


def test_updating_a_key_is_refused_after_the_condition_partition_key_first(ddb: Any) -> None:  # noqa: F811
    assert update(ddb, "REMOVE sk, pk")[1] == \
        "One or more parameter values were invalid: Cannot update attribute pk. This attribute is part of the key"
    assert update(ddb, "REMOVE pk", ConditionExpression="attribute_exists(gone)")[0] == \
        "ConditionalCheckFailedException"


def test_a_query_filter_may_not_name_a_key_attribute(ddb: Any) -> None:  # noqa: F811
    code, msg = refused(ddb.query, KeyConditionExpression="pk = :p", FilterExpression="a = :p OR sk = :p",
                        ExpressionAttributeValues={":p": {"S": "doc"}})
    assert (code, msg) == ("ValidationException", "Filter Expression can only contain non-primary key attributes: "
                           "Primary key attribute: sk")
    # A Scan's filter may.
    items = ddb.scan(TableName=T, FilterExpression="sk = :s", ExpressionAttributeValues={":s": {"S": "1"}},
                     ConsistentRead=True)["Items"]
    assert items == [DOC]


def test_a_key_condition_operator_error_has_no_expression_prefix(ddb: Any) -> None:  # noqa: F811
    # DynamoDB's wording (dynalite's tests, written against DynamoDB, and DynamoDB Local agree).
    assert refused(ddb.query, KeyConditionExpression="pk = :p OR sk = :p",
                   ExpressionAttributeValues={":p": {"S": "doc"}}) == (
        "ValidationException", "Invalid operator used in KeyConditionExpression: OR")


def test_a_query_or_scan_is_billed_once_on_all_it_read_and_nothing_read_costs_nothing(ddb: Any) -> None:  # noqa: F811
    for i in range(3):
        ddb.put_item(TableName=T, Item={"pk": {"S": "bill"}, "sk": {"S": str(i)}, "v": {"S": "x" * 100}})

    def units(**kwargs: Any) -> float:
        out = ddb.query(TableName=T, KeyConditionExpression="pk = :p", ReturnConsumedCapacity="TOTAL", **kwargs)
        return out["ConsumedCapacity"]["CapacityUnits"]

    assert units(ExpressionAttributeValues={":p": {"S": "bill"}}, ConsistentRead=True) == 1.0
    assert units(ExpressionAttributeValues={":p": {"S": "bill"}}, ConsistentRead=False) == 0.5
    assert units(ExpressionAttributeValues={":p": {"S": "nobody"}}, ConsistentRead=True) == 0.0


def test_updated_old_and_new_name_the_attributes_whose_updated_path_exists(ddb: Any) -> None:  # noqa: F811
    def rv(expr: str, which: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        return ddb.update_item(TableName=T, Key=K, UpdateExpression=expr, ReturnValues=which,
                               **kwargs).get("Attributes", {})

    one = {":v": {"N": "5"}}
    assert rv("SET m.x = :v", "UPDATED_NEW", one) == {"m": {"M": {"x": {"N": "5"}}}}  # the whole attribute
    assert rv("SET m.y = :v, z = :v", "UPDATED_OLD", one) == {}  # neither path existed before
    assert rv("REMOVE m.y", "UPDATED_NEW") == {}  # a removed path has no new value
    assert rv("SET l[5] = :v", "UPDATED_NEW", one) == {}  # appended: l[5] does not exist after
    assert rv("REMOVE l[0]", "UPDATED_OLD") == {"l": {"L": [{"N": "1"}, {"N": "5"}]}}


def test_operands_in_messages_are_quoted_as_the_request_wrote_them(ddb: Any) -> None:  # noqa: F811
    """Numbers are stored and compared canonically, but a message quotes the operand as sent."""
    _, msg = update(ddb, "SET b = :v", {":v": {"S": "a b"}, ":z": {"N": "-0"}},
                    ConditionExpression="a BETWEEN :v AND :z")
    assert msg.endswith("lower bound operand: AttributeValue: {S:a b}, upper bound operand: AttributeValue: {N:-0}")
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :pk", FilterExpression="a BETWEEN :lo AND :hi",
                     ExpressionAttributeValues={":pk": {"S": "doc"}, ":lo": {"N": "007"}, ":hi": {"N": "2"}})
    assert msg.endswith("lower bound operand: AttributeValue: {N:007}, upper bound operand: AttributeValue: {N:2}")
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                     ExpressionAttributeValues={":pk": {"S": "doc"}, ":lo": {"S": "b"}, ":hi": {"S": "a"}})
    assert msg.endswith("lower bound operand: AttributeValue: {S:b}, upper bound operand: AttributeValue: {S:a}")
    # The value itself is the canonical number: stored as DynamoDB stores it.
    ddb.update_item(TableName=T, Key=K, UpdateExpression="SET b = :v",
                    ExpressionAttributeValues={":v": {"N": "007.50"}})
    assert ddb.get_item(TableName=T, Key=K)["Item"]["b"] == {"N": "7.5"}


def test_attributes_to_get_comes_with_no_expression_and_select_is_checked_against_projections(
        ddb: Any) -> None:  # noqa: F811
    """AttributesToGet is the legacy API: a Query (whose key condition is an expression) or a Scan with a
    filter may not use it. Every Select that returns no chosen attributes refuses a projection."""
    mixed = "Can not use both expression and non-expression parameters in the same request: " \
            "Non-expression parameters: {AttributesToGet} Expression parameters: "
    values = {":pk": {"S": "doc"}}
    assert refused(ddb.query, KeyConditionExpression="pk = :pk", AttributesToGet=["a"],
                   ExpressionAttributeValues=values)[1] == mixed + "{KeyConditionExpression}"
    assert refused(ddb.query, KeyConditionExpression="pk = :pk", FilterExpression="a = :pk", ProjectionExpression="a",
                   AttributesToGet=["a"], ExpressionAttributeValues=values)[1] == \
        mixed + "{ProjectionExpression, FilterExpression, KeyConditionExpression}"
    assert refused(ddb.scan, FilterExpression="a = :pk", AttributesToGet=["a"],
                   ExpressionAttributeValues=values)[1] == mixed + "{FilterExpression}"
    items = ddb.scan(TableName=T, AttributesToGet=["a"])["Items"]  # alone it works
    assert {"a": {"N": "1"}} in items and all(set(i) <= {"a"} for i in items)
    assert refused(ddb.scan, Select="COUNT", ProjectionExpression="a")[1] == \
        "Cannot specify the ProjectionExpression when choosing to get only the Count"
    assert refused(ddb.scan, Select="COUNT", AttributesToGet=["a"])[1] == \
        "Cannot specify the AttributesToGet when choosing to get only the Count"
    assert refused(ddb.scan, Select="ALL_PROJECTED_ATTRIBUTES", AttributesToGet=["a"])[1] == \
        "Cannot specify the AttributesToGet when choosing to get ALL_PROJECTED_ATTRIBUTES"
    assert refused(ddb.scan, Select="ALL_PROJECTED_ATTRIBUTES")[1] == \
        "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"


def test_values_without_an_expression_that_can_use_them_name_those_expressions(ddb: Any) -> None:  # noqa: F811
    """A projection cannot use values: the message names the operation's expressions that can."""
    values = {":x": {"S": "1"}}
    prefix = "ExpressionAttributeValues can only be specified when using expressions: "
    assert refused(ddb.put_item, Item=K, ExpressionAttributeValues=values)[1] == prefix + "ConditionExpression is null"
    assert refused(ddb.delete_item, Key=K, ExpressionAttributeValues=values)[1] == \
        prefix + "ConditionExpression is null"
    assert refused(ddb.update_item, Key=K, ExpressionAttributeValues=values)[1] == \
        prefix + "UpdateExpression and ConditionExpression are null"
    assert refused(ddb.scan, ProjectionExpression="a", ExpressionAttributeValues=values)[1] == \
        prefix + "FilterExpression is null"
    assert refused(ddb.scan, ExpressionAttributeNames={"#x": "a"})[1] == \
        "ExpressionAttributeNames can only be specified when using expressions"
    # With an expression that could use it, an unused value is reported as unused.
    assert refused(ddb.query, KeyConditionExpression="pk = :pk",
                   ExpressionAttributeValues={":pk": {"S": "doc"}, **values})[1] == \
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:x}"


def test_a_scan_start_key_must_lie_in_the_segment_scanned(ddb: Any) -> None:  # noqa: F811
    for i in range(16):
        ddb.put_item(TableName=T, Item={"pk": {"S": f"seg{i}"}, "sk": {"S": "1"}})
    segments = [ddb.scan(TableName=T, Segment=s, TotalSegments=2)["Items"] for s in (0, 1)]
    assert segments[0] and segments[1]
    key_of = lambda item: {"pk": item["pk"], "sk": item["sk"]}  # noqa: E731
    assert ddb.scan(TableName=T, Segment=0, TotalSegments=2, ExclusiveStartKey=key_of(segments[0][0]))
    _, msg = refused(ddb.scan, Segment=0, TotalSegments=2, ExclusiveStartKey=key_of(segments[1][0]))
    assert msg == ("The provided starting key is invalid: Invalid ExclusiveStartKey. Please use ExclusiveStartKey "
                   "with correct Segment. TotalSegments: 2 Segment: 0")


def test_query_and_scan_report_several_faults_in_dynamodbs_order(ddb: Any) -> None:  # noqa: F811
    """A Query checks Select last (after its start key and filter); a Scan checks it before key rules."""
    values = {":pk": {"S": "doc"}, ":s": {"S": "x"}}
    bad_start = {"pk": {"S": "doc"}, "sk": {"S": "a"}}  # below the key condition's range
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :pk AND sk > :s", FilterExpression="sk = :s",
                     ExclusiveStartKey=bad_start, ExpressionAttributeValues=values)
    assert msg == "The provided starting key does not match the range key predicate"
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :pk", FilterExpression="sk = :s", Select="COUNT",
                     ProjectionExpression="a", ExpressionAttributeValues=values)
    assert msg == "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk"
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :pk", Select="ALL_PROJECTED_ATTRIBUTES",
                     ProjectionExpression="pk.b", ExpressionAttributeValues={":pk": values[":pk"]})
    assert msg.startswith(KEY_SCALAR)
    _, msg = refused(ddb.scan, Select="COUNT", ProjectionExpression="a", FilterExpression="pk.b = :s",
                     ExpressionAttributeValues={":s": values[":s"]})
    assert msg == "Cannot specify the ProjectionExpression when choosing to get only the Count"
    _, msg = refused(ddb.scan, Select="ALL_PROJECTED_ATTRIBUTES", FilterExpression="pk.b = :s",
                     ExpressionAttributeValues={":s": values[":s"]})
    assert msg == "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"
    _, msg = refused(ddb.scan, Select="COUNT", ProjectionExpression="a,,")  # syntax comes first of all
    assert msg.startswith("Invalid ProjectionExpression: Syntax error")
    # Key-scalar faults: the filter before the projection, and in each the partition key first.
    for kwargs, key in ((dict(FilterExpression="sk.a = :s AND pk.b = :s"), "pk"),
                        (dict(ProjectionExpression="sk.a, pk.b"), "pk"),
                        (dict(ProjectionExpression="pk.a", FilterExpression="sk.b = :s"), "sk")):
        if "FilterExpression" in kwargs:
            kwargs["ExpressionAttributeValues"] = {":s": values[":s"]}
        assert refused(ddb.scan, **kwargs)[1] == KEY_SCALAR + key
    # A Scan's start key is judged before its expressions' key rules.
    _, msg = refused(ddb.scan, FilterExpression="pk.b = :s", ExclusiveStartKey={"pk": {"S": "x"}, "sk": {"N": "1"}},
                     ExpressionAttributeValues={":s": values[":s"]})
    assert msg.startswith("The provided starting key is invalid")


def test_batch_requests_refuse_mixed_parameters_and_ambiguous_write_requests(ddb: Any) -> None:  # noqa: F811
    with pytest.raises(ClientError) as err:
        ddb.batch_get_item(RequestItems={T: {"Keys": [K], "AttributesToGet": ["a"], "ProjectionExpression": "a"}})
    assert err.value.response["Error"]["Message"] == (
        "Can not use both expression and non-expression parameters in the same request: "
        "Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}")
    union = ("Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported "
             "datatypes")
    for request in ({}, {"PutRequest": {"Item": K}, "DeleteRequest": {"Key": K}}):
        with pytest.raises(ClientError) as err:
            ddb.batch_write_item(RequestItems={T: [request]})
        assert err.value.response["Error"]["Message"] == union


def test_syntax_comes_before_undefined_placeholders_and_grammar_words_are_never_names(
        ddb: Any) -> None:  # noqa: F811
    """DynamoDB Local reports a syntax error, a reserved word or an unknown function before an
    undefined #name or :value, and a grammar word (AND, OR, IN, SET, REMOVE...) where a name
    stands is a syntax error at that word."""
    _, msg = refused(ddb.put_item, Item=DOC, ConditionExpression="#n = ")
    assert msg == 'Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "= "'
    _, msg = refused(ddb.put_item, Item=DOC, ConditionExpression="foo(a) AND a = :u")
    assert msg == "Invalid ConditionExpression: Invalid function name; function: foo"
    _, msg = update(ddb, "SET name = :u")
    assert msg == "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: name"
    _, msg = refused(ddb.get_item, Key=K, ProjectionExpression="#n,,")
    assert msg == 'Invalid ProjectionExpression: Syntax error; token: ",", near: ",,"'
    _, msg = refused(ddb.put_item, Item=DOC, ConditionExpression="a = :v OR OR",
                     ExpressionAttributeValues={":v": {"N": "1"}})
    assert msg == 'Invalid ConditionExpression: Syntax error; token: "OR", near: "OR OR"'
    _, msg = update(ddb, "SET a = :v, remove = :v", {":v": {"N": "1"}})
    assert msg == 'Invalid UpdateExpression: Syntax error; token: "remove", near: ", remove ="'
    _, msg = refused(ddb.get_item, Key=K, ProjectionExpression="a.or")
    assert msg == 'Invalid ProjectionExpression: Syntax error; token: "or", near: ".or"'


def test_a_query_reports_key_condition_faults_before_unused_values_and_those_before_key_rules(
        ddb: Any) -> None:  # noqa: F811
    unused = {":p": {"S": "doc"}, ":w": {"S": "1"}}
    _, msg = refused(ddb.query, KeyConditionExpression="pk =  ", ExpressionAttributeValues=unused)
    assert msg == 'Invalid KeyConditionExpression: Syntax error; token: "<EOF>", near: "=  "'
    _, msg = refused(ddb.query, KeyConditionExpression="name = :p", ExpressionAttributeValues=unused)
    assert msg == "Invalid KeyConditionExpression: Attribute name is a reserved keyword; reserved keyword: name"
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :p AND and", ExpressionAttributeValues=unused)
    assert msg == 'Invalid KeyConditionExpression: Syntax error; token: "and", near: "AND and"'
    # a fault only the key schema shows (a missing key, a key read as a map) comes after unused values
    for extra in ({"KeyConditionExpression": "sk = :p"},
                  {"KeyConditionExpression": "pk = :p", "FilterExpression": "pk.a = :p"}):
        _, msg = refused(ddb.query, ExpressionAttributeValues=unused, **extra)
        assert msg == "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"


def test_attributes_to_get_is_refused_beside_a_projection_before_it_parses_and_may_not_repeat(
        ddb: Any, kynamo: Any) -> None:  # noqa: F811
    """DynamoDB Local refuses the legacy list beside an expression before parsing the expression.
    A repeated name gets the service's wording (dynalite's validations; DynamoDB Local gives it for
    BatchGetItem, "Cannot have two attributes with the same name" elsewhere), and an empty list the
    API's length constraint (DynamoDB Local takes it as absent)."""
    _, msg = refused(ddb.get_item, Key=K, AttributesToGet=["a"], ProjectionExpression="a,,b")
    assert msg.startswith("Can not use both expression and non-expression parameters in the same request")
    dup = "One or more parameter values were invalid: Duplicate value in attribute name: a"
    assert refused(ddb.get_item, Key=K, AttributesToGet=["a", "a"])[1] == dup
    assert refused(ddb.scan, AttributesToGet=["a", "a"])[1] == dup
    with pytest.raises(ClientError) as err:
        ddb.batch_get_item(RequestItems={T: {"Keys": [K], "AttributesToGet": ["a", "a"]}})
    assert err.value.response["Error"]["Message"] == dup
    # (boto3 refuses an empty list itself: sent raw)
    status, doc = kynamo.post("GetItem", {"TableName": T, "Key": K, "AttributesToGet": []})
    assert status == 400 and doc["__type"].endswith("#ValidationException")
    assert doc["message"] == ("1 validation error detected: Value '[]' at 'attributesToGet' failed to satisfy "
                              "constraint: Member must have length greater than or equal to 1")
    # distinct names still project as before
    assert ddb.get_item(TableName=T, Key=K, AttributesToGet=["a", "s"])["Item"] == {"a": DOC["a"], "s": DOC["s"]}


def test_size_names_an_attribute_and_a_parenthesis_may_hold_an_operand(ddb: Any) -> None:  # noqa: F811
    """DynamoDB Local reads a bare `size` as an attribute name (SIZE is on the reserved list), lets
    a parenthesis hold an operand, and refuses a key condition that reads a key as a map."""
    ddb.update_item(TableName=T, Key=K, UpdateExpression="SET size = :v", ExpressionAttributeValues={":v": {"N": "5"}})
    got = ddb.get_item(TableName=T, Key=K, ProjectionExpression="size")["Item"]
    assert got == {"size": {"N": "5"}}
    ddb.put_item(TableName=T, Item=DOC, ConditionExpression="(a) < :v", ExpressionAttributeValues={":v": {"N": "2"}})
    _, msg = refused(ddb.query, KeyConditionExpression="pk = :p AND sk.x = :p",
                     ExpressionAttributeValues={":p": {"S": "doc"}})
    assert msg == KEY_SCALAR + "sk"
