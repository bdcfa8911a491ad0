"""Layers through real boto3: publish, get, list, page, delete, and functions that use them.

What a handler finds at /opt is the launcher's part and is not tested here.
"""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import zipfile
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faas_support import (
    ACCOUNT_ID,
    REGION,
    FaasServer,
    ServerFactory,
    code_sha256,
    create_function,
    lambda_client,
    make_zip,
)

pytestmark = pytest.mark.timeout(90)

LAYER_PREFIX = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:"
CREATED_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
HANDLER = "def handler(event, context):\n    return 1\n"


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


def publish(client: Any, name: str, files: dict[str, str] | None = None, **members: Any) -> Any:
    zip_bytes = make_zip(files or {"python/mod.py": f"NAME = {name!r}\n"})
    return client.publish_layer_version(LayerName=name, Content={"ZipFile": zip_bytes}, **members)


def error_code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def error_message(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Message"])


# -- layer versions --------------------------------------------------------------------------


def test_publish_then_get_in_every_form(client: Any) -> None:
    zip_bytes = make_zip({"python/shared.py": "VALUE = 42\n", "bin/tool": "#!/bin/sh\n"})
    published = client.publish_layer_version(
        LayerName="ly-shared",
        Description="shared helpers",
        Content={"ZipFile": zip_bytes},
        CompatibleRuntimes=["python3.11", "python3.12"],
        CompatibleArchitectures=["x86_64", "arm64"],
        LicenseInfo="MIT",
    )
    assert published.pop("ResponseMetadata")["HTTPStatusCode"] == 201
    assert published["LayerArn"] == f"{LAYER_PREFIX}ly-shared"
    assert published["LayerVersionArn"] == f"{LAYER_PREFIX}ly-shared:1"
    assert published["Version"] == 1
    assert published["Description"] == "shared helpers"
    assert CREATED_DATE.fullmatch(published["CreatedDate"]), published["CreatedDate"]
    assert published["CompatibleRuntimes"] == ["python3.11", "python3.12"]
    assert published["CompatibleArchitectures"] == ["x86_64", "arm64"]
    assert published["LicenseInfo"] == "MIT"
    assert published["Content"]["CodeSha256"] == code_sha256(zip_bytes)
    assert published["Content"]["CodeSize"] == len(zip_bytes)

    fetched = [
        client.get_layer_version(LayerName="ly-shared", VersionNumber=1),
        client.get_layer_version(LayerName=published["LayerArn"], VersionNumber=1),
        client.get_layer_version_by_arn(Arn=published["LayerVersionArn"]),
    ]
    for response in fetched:
        response.pop("ResponseMetadata")
        assert response == {**published, "Content": response["Content"]}
        assert response["Content"]["CodeSha256"] == code_sha256(zip_bytes)
        with urllib.request.urlopen(response["Content"]["Location"], timeout=10) as download:
            assert download.read() == zip_bytes


def test_optional_members_are_left_out(client: Any) -> None:
    published = publish(client, "ly-bare")
    assert "CompatibleRuntimes" not in published
    assert "CompatibleArchitectures" not in published
    assert "LicenseInfo" not in published
    assert published["Description"] == ""


def test_version_numbers_are_never_reused(client: Any) -> None:
    assert [publish(client, "ly-count")["Version"] for _ in range(3)] == [1, 2, 3]
    client.delete_layer_version(LayerName="ly-count", VersionNumber=3)
    assert publish(client, "ly-count")["Version"] == 4
    for version in (1, 2, 4):
        client.delete_layer_version(LayerName="ly-count", VersionNumber=version)
    assert client.list_layer_versions(LayerName="ly-count")["LayerVersions"] == []
    assert "ly-count" not in {layer["LayerName"] for layer in client.list_layers()["Layers"]}
    assert publish(client, "ly-count")["Version"] == 5


def test_delete_is_idempotent(client: Any) -> None:
    publish(client, "ly-delete")
    for _ in range(2):
        response = client.delete_layer_version(LayerName="ly-delete", VersionNumber=1)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    client.delete_layer_version(LayerName="ly-never-existed", VersionNumber=7)
    client.delete_layer_version(LayerName=f"{LAYER_PREFIX}ly-delete", VersionNumber=99)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.get_layer_version(LayerName="ly-delete", VersionNumber=1)
    assert error_message(info) == "The resource you requested does not exist."
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version_by_arn(Arn=f"{LAYER_PREFIX}ly-delete:1")


def test_unknown_versions_are_not_found(client: Any) -> None:
    publish(client, "ly-known")
    for name, version in [("ly-known", 2), ("ly-unknown", 1), ("ly-known", 0)]:
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_layer_version(LayerName=name, VersionNumber=version)
    foreign = f"arn:aws:lambda:{REGION}:123456789012:layer:ly-known"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version(LayerName=foreign, VersionNumber=1)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version_by_arn(Arn=f"{foreign}:1")
    assert client.list_layer_versions(LayerName="ly-unknown")["LayerVersions"] == []


def test_filters_pick_the_latest_matching_version(client: Any) -> None:
    publish(
        client, "ly-filter", CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"]
    )
    publish(
        client, "ly-filter", CompatibleRuntimes=["nodejs20.x"], CompatibleArchitectures=["arm64"]
    )
    publish(client, "ly-filter", CompatibleRuntimes=["python3.12", "nodejs20.x"])

    def latest(**filters: str) -> int | None:
        for layer in client.list_layers(**filters)["Layers"]:
            if layer["LayerName"] == "ly-filter":
                assert layer["LayerArn"] == f"{LAYER_PREFIX}ly-filter"
                return int(layer["LatestMatchingVersion"]["Version"])
        return None

    assert latest() == 3
    assert latest(CompatibleRuntime="python3.12") == 3
    assert latest(CompatibleArchitecture="x86_64") == 1
    assert latest(CompatibleArchitecture="arm64") == 2
    assert latest(CompatibleRuntime="python3.12", CompatibleArchitecture="arm64") is None
    assert latest(CompatibleRuntime="ruby3.3") is None

    def versions(**filters: str) -> list[int]:
        listed = client.list_layer_versions(LayerName="ly-filter", **filters)["LayerVersions"]
        return [int(item["Version"]) for item in listed]

    assert versions() == [3, 2, 1]
    assert versions(CompatibleRuntime="nodejs20.x") == [3, 2]
    assert versions(CompatibleArchitecture="x86_64") == [1]
    item = client.list_layer_versions(LayerName=f"{LAYER_PREFIX}ly-filter")["LayerVersions"][-1]
    assert item["LayerVersionArn"] == f"{LAYER_PREFIX}ly-filter:1"
    assert item["CompatibleRuntimes"] == ["python3.12"]
    assert CREATED_DATE.fullmatch(item["CreatedDate"])


def test_list_layers_pages(make_server: ServerFactory) -> None:
    client = lambda_client(make_server())
    names = [f"page-{index}" for index in range(7)]
    for name in reversed(names):
        publish(client, name)
    sizes, seen, marker = [], [], None
    for _ in range(10):
        page = client.list_layers(MaxItems=3, **({"Marker": marker} if marker else {}))
        sizes.append(len(page["Layers"]))
        seen.extend(layer["LayerName"] for layer in page["Layers"])
        marker = page.get("NextMarker")
        if marker is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == names
    pages = list(client.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(page["Layers"]) for page in pages] == [2, 2, 2, 1]
    assert "NextMarker" not in pages[-1]
    assert [layer["LayerName"] for page in pages for layer in page["Layers"]] == names


def test_list_layer_versions_pages(client: Any) -> None:
    for _ in range(5):
        publish(client, "ly-pages")
    paginator = client.get_paginator("list_layer_versions")
    pages = list(paginator.paginate(LayerName="ly-pages", PaginationConfig={"PageSize": 2}))
    assert [[item["Version"] for item in page["LayerVersions"]] for page in pages] == [
        [5, 4],
        [3, 2],
        [1],
    ]
    assert "NextMarker" not in pages[-1]
    assert all("NextMarker" in page for page in pages[:-1])


@pytest.mark.parametrize(
    ("members", "code"),
    [
        ({"CompatibleRuntimes": ["python3.12"] * 16}, "ValidationException"),
        ({"CompatibleRuntimes": ["cobol85"]}, "ValidationException"),
        ({"CompatibleArchitectures": ["x86_64", "arm64", "x86_64"]}, "ValidationException"),
        ({"CompatibleArchitectures": ["sparc"]}, "ValidationException"),
        ({"LicenseInfo": "x" * 513}, "ValidationException"),
        ({"Description": "x" * 257}, "ValidationException"),
        ({"LayerName": "bad name!"}, "ValidationException"),
        ({"LayerName": "x" * 141}, "ValidationException"),
        ({"Content": {"S3Bucket": "bucket", "S3Key": "key"}}, "InvalidParameterValueException"),
        ({"Content": {"ZipFile": b"not a zip"}}, "InvalidParameterValueException"),
        ({"Content": {"ZipFile": make_zip({"../evil.py": "x"})}}, "InvalidParameterValueException"),
        ({"Content": {"ZipFile": make_zip({"/abs.py": "x"})}}, "InvalidParameterValueException"),
    ],
    ids=[
        "16-runtimes", "unknown-runtime", "3-architectures", "unknown-architecture",
        "long-license", "long-description", "bad-name", "long-name", "s3", "not-a-zip",
        "parent-path", "absolute-path",
    ],
)  # fmt: skip
def test_bad_publish_is_refused(client: Any, members: dict[str, Any], code: str) -> None:
    request = {"LayerName": "ly-bad", "Content": {"ZipFile": make_zip({"a.txt": "a"})}}
    request.update(members)
    with pytest.raises(ClientError) as info:
        client.publish_layer_version(**request)
    assert error_code(info) == code
    assert client.list_layer_versions(LayerName="ly-bad")["LayerVersions"] == []


def test_hostile_symlink_layer_is_refused(client: Any) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("python/escape")
        info.external_attr = (0o120777) << 16
        archive.writestr(info, "../../../../etc")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.publish_layer_version(LayerName="ly-symlink", Content={"ZipFile": buffer.getvalue()})


@pytest.mark.parametrize("max_items", [0, 51])
def test_max_items_out_of_range(client: Any, server: FaasServer, max_items: int) -> None:
    # botocore refuses MaxItems 0 itself; send both by hand to check the server's rule.
    for path in ("/2018-10-31/layers", "/2018-10-31/layers/ly-any/versions"):
        request = urllib.request.Request(f"{server.url}{path}?MaxItems={max_items}")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        with info.value:
            assert info.value.code == 400
            assert info.value.headers["x-amzn-ErrorType"] == "ValidationException"
    with pytest.raises(ClientError) as client_info:
        client.list_layers(CompatibleRuntime="cobol85")
    assert error_code(client_info) == "ValidationException"


# -- functions with layers -------------------------------------------------------------------


def test_function_layers_in_order(client: Any) -> None:
    first = publish(client, "ly-fn-a")
    second = publish(client, "ly-fn-b", {"python/b.py": "B = 2\n" * 100})
    order = [second["LayerVersionArn"], first["LayerVersionArn"]]
    created = create_function(client, "ly-fn", HANDLER, Layers=order)
    expected = [
        {"Arn": second["LayerVersionArn"], "CodeSize": second["Content"]["CodeSize"]},
        {"Arn": first["LayerVersionArn"], "CodeSize": first["Content"]["CodeSize"]},
    ]
    assert created["Layers"] == expected
    assert client.get_function_configuration(FunctionName="ly-fn")["Layers"] == expected
    assert client.get_function(FunctionName="ly-fn")["Configuration"]["Layers"] == expected
    listed = {f["FunctionName"]: f for f in client.list_functions()["Functions"]}
    assert listed["ly-fn"]["Layers"] == expected

    kept = client.update_function_configuration(FunctionName="ly-fn", Description="no change")
    assert kept["Layers"] == expected
    one = client.update_function_configuration(
        FunctionName="ly-fn", Layers=[first["LayerVersionArn"]]
    )
    assert [layer["Arn"] for layer in one["Layers"]] == [first["LayerVersionArn"]]
    cleared = client.update_function_configuration(FunctionName="ly-fn", Layers=[])
    assert "Layers" not in cleared
    assert "Layers" not in client.get_function_configuration(FunctionName="ly-fn")


def test_function_layer_errors(client: Any) -> None:
    layer = publish(client, "ly-fn-err")
    arn = layer["LayerVersionArn"]
    create_function(client, "ly-fn-err", HANDLER)
    missing = f"{LAYER_PREFIX}ly-fn-err:9"
    foreign = f"arn:aws:lambda:{REGION}:123456789012:layer:ly-fn-err:1"
    for layers in ([missing], [arn, missing], [foreign]):
        with pytest.raises(client.exceptions.InvalidParameterValueException) as info:
            client.update_function_configuration(FunctionName="ly-fn-err", Layers=layers)
        assert error_message(info) == f"Layer version {layers[-1]} does not exist."
        with pytest.raises(client.exceptions.InvalidParameterValueException):
            create_function(client, "ly-fn-err-new", HANDLER, Layers=layers)
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_configuration(FunctionName="ly-fn-err", Layers=[arn] * 6)
    second = publish(client, "ly-fn-err")["LayerVersionArn"]
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_configuration(FunctionName="ly-fn-err", Layers=[arn, second])
    for bad in (f"{LAYER_PREFIX}ly-fn-err", "not-an-arn", f"{LAYER_PREFIX}ly fn:1"):
        with pytest.raises(ClientError) as validation:
            client.update_function_configuration(FunctionName="ly-fn-err", Layers=[bad])
        assert error_code(validation) == "ValidationException"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="ly-fn-err-new")
    assert "Layers" not in client.get_function_configuration(FunctionName="ly-fn-err")


def test_deleted_layer_stays_with_its_functions(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    kept = publish(client, "ly-kept", {"python/kept.py": "KEPT = 1\n"})
    dropped = publish(client, "ly-dropped", {"python/dropped.py": "DROPPED = 1\n"})
    create_function(client, "ly-user", HANDLER, Layers=[kept["LayerVersionArn"]])
    for layer in (kept, dropped):
        client.delete_layer_version(LayerName=layer["LayerArn"], VersionNumber=1)

    with pytest.raises(client.exceptions.InvalidParameterValueException):
        create_function(client, "ly-late", HANDLER, Layers=[kept["LayerVersionArn"]])
    # Functions that already reference it keep it through any update.
    client.update_function_configuration(FunctionName="ly-user", Description="still here")
    client.update_function_configuration(FunctionName="ly-user", Layers=[kept["LayerVersionArn"]])
    client.update_function_code(FunctionName="ly-user", ZipFile=make_zip({"app.py": HANDLER * 2}))

    server.restart()
    client = lambda_client(server)
    config = client.get_function_configuration(FunctionName="ly-user")
    assert config["Layers"] == [
        {"Arn": kept["LayerVersionArn"], "CodeSize": kept["Content"]["CodeSize"]}
    ]
    zips = server.data_dir / "code" / "zips"
    kept_sha = _hex(kept["Content"]["CodeSha256"])
    dropped_sha = _hex(dropped["Content"]["CodeSha256"])
    assert (zips / f"{kept_sha}.zip").is_file(), "a referenced layer's code was collected"
    assert not (zips / f"{dropped_sha}.zip").exists(), "an unreferenced deleted layer was kept"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_layer_version(LayerName="ly-kept", VersionNumber=1)
    assert publish(client, "ly-kept")["Version"] == 2
    assert publish(client, "ly-dropped")["Version"] == 2

    # Once no function references it, the next start releases its code too.
    client.update_function_configuration(FunctionName="ly-user", Layers=[])
    server.restart()
    assert not (zips / f"{kept_sha}.zip").exists()
    assert publish(lambda_client(server), "ly-kept")["Version"] == 3


def _hex(code_sha256: str) -> str:
    import base64

    return base64.b64decode(code_sha256).hex()


def test_code_and_layers_share_the_unzipped_cap(make_server: ServerFactory) -> None:
    cap = 300_000
    client = lambda_client(make_server(max_unzipped_bytes=cap))
    big = publish(client, "ly-big", {"data.bin": "x" * 200_000})["LayerVersionArn"]
    other = publish(client, "ly-other", {"data2.bin": "y" * 150_000})["LayerVersionArn"]
    create_function(client, "ly-small", HANDLER, Layers=[big])

    with pytest.raises(client.exceptions.InvalidParameterValueException) as info:
        client.update_function_configuration(FunctionName="ly-small", Layers=[big, other])
    assert error_message(info) == f"Layers consume more than the available size of {cap} bytes"

    code = {"app.py": HANDLER, "blob.txt": "z" * 120_000}
    with pytest.raises(client.exceptions.InvalidParameterValueException) as info:
        create_function(client, "ly-large", code, Layers=[big])
    assert error_message(info).startswith(
        f"Function code combined with layers exceeds the maximum allowed size of {cap} bytes. "
        "The actual size is "
    )
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_code(FunctionName="ly-small", ZipFile=make_zip(code))
    assert client.get_function_configuration(FunctionName="ly-small")["CodeSize"] == len(
        make_zip({"app.py": HANDLER})
    )
    create_function(client, "ly-large", code)  # fits without the layer
