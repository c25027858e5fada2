#!/usr/bin/env python3
"""Golden fixtures: what `az ml online-deployment create -f FILE --set model=...` sends (azure-ai-ml 1.35.2).

Install the pinned SDK in a virtualenv outside the repository, then run this script from anywhere:

    python3 -m venv .venv && .venv/bin/pip install azure-ai-ml==1.35.2 && .venv/bin/python scripts/az-ml-goldens.py

For every deployment YAML under tests/fixtures/azml/ (a YAML mapping with `endpoint_name` or `instance_type`
and no `dependencies`; conda files are skipped) it writes `<yaml file name>.golden.json` beside it.

Everything is computed offline with the SDK's own code. The SDK's OnlineDeploymentOperations.begin_create_or_update
runs for real; only the objects that would talk to the network are replaced by recorders:
  * the ARM clients (endpoint GET, deployment PUT, code/environment version PUT, code hash lookup),
  * startPendingUpload (get_storage_info_for_non_registry_asset) and the blob container client,
  * the data operations (the Data entity is captured and turned into its REST body),
  * the environment label resolver (`@latest`) and the auto-increment container lookup,
  * the workspace GET (location "eastus").
Bodies are serialised exactly as the 1.35.2 REST client does before a PUT:
`json.dumps(body, cls=SdkJSONEncoder, exclude_readonly=True)`.
"""

import collections
import io
import json
import logging
import os
import re
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import yaml

import azure.ai.ml

PINNED = "1.35.2"
if azure.ai.ml.__version__ != PINNED:
    sys.exit(
        f"azure-ai-ml {azure.ai.ml.__version__} found, {PINNED} required: "
        f"python3 -m venv .venv && .venv/bin/pip install azure-ai-ml=={PINNED}"
    )

from azure.ai.ml import load_online_deployment  # noqa: E402
from azure.ai.ml._restclient.arm_ml_service import models as rest  # noqa: E402
from azure.ai.ml._restclient.arm_ml_service._utils.model_base import SdkJSONEncoder  # noqa: E402
from azure.ai.ml._scope_dependent_operations import (  # noqa: E402
    OperationConfig,
    OperationScope,
    OperationsContainer,
    _ScopeDependentOperations,
)
from azure.ai.ml._utils._asset_utils import (  # noqa: E402
    get_content_hash_version,
    get_ignore_file,
    get_upload_files_from_folder,
)
from azure.ai.ml.constants._common import AzureMLResourceType  # noqa: E402
from azure.ai.ml.entities._assets.environment import ANONYMOUS_ENV_NAME  # noqa: E402
from azure.ai.ml.operations import _code_operations, _environment_operations  # noqa: E402
from azure.ai.ml.operations._code_operations import CodeOperations  # noqa: E402
from azure.ai.ml.operations._environment_operations import EnvironmentOperations  # noqa: E402
from azure.ai.ml.operations._online_deployment_operations import OnlineDeploymentOperations  # noqa: E402
from azure.core.exceptions import ResourceNotFoundError  # noqa: E402
from azure.storage.blob import ContainerClient  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000000"
RG = "ml-rg"
WS = "ml-ws"
W = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
MODEL_ID = W + "/models/fraud-model/versions/7"
LOCATION = "eastus"
# A realistic pending-upload answer; the blob URI is replaced by {blobUri} in the goldens.
BLOB_URI = "https://goldenacct.blob.core.windows.net/golden-container"
SAS_URI = BLOB_URI + "?sv=2021-10-04&sr=c&sp=rwl&sig=golden"
LATEST_VERSION = "{latestVersion}"
NEXT_VERSION = "{nextVersion}"

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "azml"


def wire(body):
    """The JSON text the 1.35.2 REST client puts on the wire for a PUT body, parsed back in key order."""
    text = json.dumps(body, cls=SdkJSONEncoder, exclude_readonly=True)
    return json.loads(text, object_pairs_hook=collections.OrderedDict)


class Recorder:
    def __init__(self):
        self.calls = []  # (what, detail) in call order, for assertions
        self.deployment_body = None
        self.code_put = None
        self.code_entity = None
        self.code_local = None
        self.env_puts = []
        self.labels = []
        self.data = []
        self.blobs_uploaded = []
        self.blob_metadata = []


REC = None  # the recorder of the YAML being processed


# ---------------------------------------------------------------- network replacements
class FakeBlobClient:
    def __init__(self, name):
        self.name = name

    def get_blob_properties(self, **kwargs):
        err = ResourceNotFoundError("The specified blob does not exist.")
        err.error_code = "BlobNotFound"  # as azure-storage-blob sets it on a 404
        raise err

    def set_blob_metadata(self, metadata, **kwargs):
        REC.blob_metadata.append((self.name, dict(metadata)))


def _fake_get_blob_client(self, blob, **kwargs):
    return FakeBlobClient(blob)


def _fake_upload_blob(self, name, data, **kwargs):
    REC.blobs_uploaded.append(name)


ContainerClient.get_blob_client = _fake_get_blob_client
ContainerClient.upload_blob = _fake_upload_blob


def _fake_storage_info(**kwargs):
    REC.calls.append(("startPendingUpload", kwargs.get("name")))
    return {"sas_uri": SAS_URI, "blob_uri": BLOB_URI}


_code_operations.get_storage_info_for_non_registry_asset = _fake_storage_info


def _fake_next_latest(**kwargs):
    REC.calls.append(("GET environment container", kwargs.get("name")))
    return NEXT_VERSION, LATEST_VERSION


_environment_operations._get_next_latest_versions_from_container = _fake_next_latest


class FakeCodeVersions:
    def list(self, **kwargs):
        REC.calls.append(("GET codes by hash", kwargs.get("hash")))
        return []

    def create_or_update(self, name, version, body, **kwargs):
        REC.code_put = (name, version, wire(body))
        doc = dict(wire(body))
        doc.update({"id": f"{W}/codes/{name}/versions/{version}", "name": version})
        return rest.CodeVersion(doc)


class FakeEnvVersions:
    def create_or_update(self, name, version, body, **kwargs):
        REC.env_puts.append((name, version, wire(body)))
        doc = dict(wire(body))
        doc.update({"id": f"{W}/environments/{name}/versions/{version}", "name": version})
        return rest.EnvironmentVersion(doc)


class FakeDataOperations:
    def create_or_update(self, data):
        REC.data.append(data)
        return data

    def get(self, name, version):  # only reached when the PUT answers "already exists"
        raise AssertionError("not reached offline")


class FakeWorkspaceOperations:
    def get(self, name):
        REC.calls.append(("GET workspace", name))
        return SimpleNamespace(location=LOCATION)


class FakeDatastoreOperations:
    def __getattr__(self, item):
        raise RuntimeError(f"datastore operation {item!r} needs the network (not simulated)")


class FakeEndpoints:
    def get(self, **kwargs):
        REC.calls.append(("GET endpoint", kwargs.get("endpoint_name")))
        return None


class FakeDeployments:
    def begin_create_or_update(self, body, **kwargs):
        REC.deployment_body = wire(body)
        return None


def build_operations():
    scope = OperationScope(subscription_id=SUB, resource_group_name=RG, workspace_name=WS)
    config = OperationConfig(show_progress=False, enable_telemetry=False)
    container = OperationsContainer()

    code_ops = CodeOperations.__new__(CodeOperations)
    _ScopeDependentOperations.__init__(code_ops, scope, config)
    code_ops._service_client = None
    code_ops._version_operation = FakeCodeVersions()
    code_ops._container_operation = None
    code_ops._datastore_operation = FakeDatastoreOperations()
    code_ops._init_kwargs = {}

    env_ops = EnvironmentOperations.__new__(EnvironmentOperations)
    _ScopeDependentOperations.__init__(env_ops, scope, config)
    env_ops._kwargs = {}
    env_ops._containers_operations = None
    env_ops._version_operations = FakeEnvVersions()
    env_ops._service_client = None
    env_ops._registry_service_client = None
    env_ops._all_operations = container
    env_ops._datastore_operation = FakeDatastoreOperations()

    def latest(name):
        REC.labels.append((name, "latest"))
        return SimpleNamespace(version=LATEST_VERSION)

    env_ops._managed_label_resolver = {"latest": latest}

    container.add(AzureMLResourceType.CODE, code_ops)
    container.add(AzureMLResourceType.ENVIRONMENT, env_ops)
    container.add(AzureMLResourceType.DATA, FakeDataOperations())
    container.add(AzureMLResourceType.WORKSPACE, FakeWorkspaceOperations())
    container.add(AzureMLResourceType.DATASTORE, FakeDatastoreOperations())

    dep_ops = OnlineDeploymentOperations.__new__(OnlineDeploymentOperations)
    _ScopeDependentOperations.__init__(dep_ops, scope, config)
    dep_ops._local_deployment_helper = None
    dep_ops._online_deployment = FakeDeployments()
    dep_ops._online_endpoint_operations = FakeEndpoints()
    dep_ops._all_operations = container
    dep_ops._credentials = None
    dep_ops._init_kwargs = {}
    return dep_ops


# ---------------------------------------------------------------- one YAML
def scrub(text, case_dir):
    """Machine-independent error text: ANSI colour codes dropped, the absolute case path becomes {case_dir}."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))  # the SDK colours its formatted errors (colorama)
    for p in sorted({str(case_dir), str(case_dir.resolve())}, key=len, reverse=True):
        text = text.replace(p, "{case_dir}")
    return text


def code_record(yaml_code, code_entity_path):
    folder = Path(code_entity_path)
    ignore = get_ignore_file(folder)
    pairs = get_upload_files_from_folder(folder, ignore_file=ignore)
    hashed = sorted(pairs, key=lambda x: str(x[1]).lower())  # _get_file_list_content_hash order
    uploads = sorted(get_upload_files_from_folder(folder, prefix=folder.name + "/", ignore_file=ignore))
    name, version, body = REC.code_put
    blob_names = [dest for _, dest in uploads]
    assert sorted(REC.blobs_uploaded) == sorted(blob_names), (REC.blobs_uploaded, blob_names)
    indicator = [n for n, md in REC.blob_metadata if md.get("upload_status") == "completed"]
    assert indicator == [blob_names[0]], (indicator, blob_names)
    props = body["properties"]
    props["codeUri"] = props["codeUri"].replace(BLOB_URI, "{blobUri}")
    return collections.OrderedDict(
        [
            ("yaml_path", yaml_code),
            ("folder_name", folder.name),
            ("hash", props["properties"]["hash_sha256"]),
            ("hash_version", get_content_hash_version()),
            ("files", [collections.OrderedDict([("path", rel), ("size", os.path.getsize(p))]) for p, rel in hashed]),
            ("blob_names", blob_names),
            ("indicator_blob", indicator[0]),
            ("version_body", body),
        ]
    )


def run_one(yaml_path: Path):
    global REC
    REC = Recorder()
    case_dir = next(p for p in [yaml_path.parent, *yaml_path.parents] if p.parent == FIXTURES)
    golden = collections.OrderedDict(
        [
            ("sdk", f"azure-ai-ml {PINNED}"),
            ("yaml", yaml_path.relative_to(case_dir).as_posix()),
            ("workspace", W),
            ("endpoint", None),
            ("deployment", None),
            ("refused", None),
            ("data_assets", None),
            ("code", None),
            ("environment", None),
            ("deployment_body", None),
        ]
    )
    # az ml: load_online_deployment(FILE, params_override=[{"model": ...}]) (the --set model=... override).
    # The deployment schema only accepts an ARM id with the "azureml:" prefix; it strips the prefix on load.
    try:
        dep = load_online_deployment(source=str(yaml_path), params_override=[{"model": "azureml:" + MODEL_ID}])
    except Exception as e:  # noqa: BLE001 - the refusal is the golden
        golden["refused"] = scrub(e, case_dir)
        return golden
    golden["endpoint"] = dep.endpoint_name
    golden["deployment"] = dep.name
    yaml_code = dep.code_configuration.code if dep.code_configuration else None
    yaml_env = dep.environment
    env_version_in_yaml = getattr(yaml_env, "version", None)
    env_name_in_yaml = getattr(yaml_env, "name", None)
    env_auto_increment = getattr(yaml_env, "_auto_increment_version", False)
    has_inference_config = bool(getattr(yaml_env, "inference_config", None))

    # Capture the Code entity the SDK builds (path resolved against the YAML's folder).
    orig_create = CodeOperations.create_or_update

    dep_ops = build_operations()
    code_ops = dep_ops._all_operations.all_operations[AzureMLResourceType.CODE]
    real_code_create = code_ops.create_or_update

    def capture_code(code):
        REC.code_entity = code
        local = Path(code.path)  # resolved as _get_snapshot_path_info / _check_and_upload_path do
        REC.code_local = local if local.is_absolute() else Path(code.base_path, local).resolve()
        return real_code_create(code)

    code_ops.create_or_update = capture_code
    try:
        dep_ops.begin_create_or_update(dep)
    except Exception as e:  # noqa: BLE001
        golden["refused"] = scrub(e, case_dir)
        return golden
    finally:
        CodeOperations.create_or_update = orig_create

    body = REC.deployment_body
    assert body is not None
    props = body["properties"]

    golden["data_assets"] = []
    for coll_name, data in zip(dep.data_collector.collections.keys() if dep.data_collector else [], REC.data):
        golden["data_assets"].append(
            collections.OrderedDict(
                [
                    ("collection", coll_name),
                    ("name", data.name),
                    ("version", data.version),
                    ("body", wire(data._to_rest_object())),
                ]
            )
        )

    if REC.code_entity is not None:
        golden["code"] = code_record(yaml_code, REC.code_local)
        props["codeConfiguration"]["codeId"] = "{codeId}"

    if REC.env_puts:
        assert len(REC.env_puts) == 1, REC.env_puts
        name, version, env_body = REC.env_puts[0]
        if name == ANONYMOUS_ENV_NAME and env_body["properties"].get("isAnonymous"):
            env = collections.OrderedDict(
                [
                    ("kind", "anonymous"),
                    ("name", name),
                    ("version", version),
                    ("conda_text", env_body["properties"].get("condaFile")),
                    ("body", env_body),
                ]
            )
            if has_inference_config:
                env["version_is_sdk_internal"] = True
        else:
            env = collections.OrderedDict(
                [
                    ("kind", "named"),
                    ("name", name),
                    ("version", None if env_auto_increment and not env_version_in_yaml else version),
                    ("body", env_body),
                ]
            )
        golden["environment"] = env
        props["environmentId"] = "{environmentId}"
    elif REC.labels:
        name, label = REC.labels[0]
        golden["environment"] = collections.OrderedDict([("kind", "label"), ("name", name), ("label", label)])
        props["environmentId"] = "{environmentId}"
    elif "environmentId" in props:
        golden["environment"] = collections.OrderedDict(
            [("kind", "reference"), ("environment_id", props["environmentId"])]
        )
    _ = env_name_in_yaml
    golden["deployment_body"] = body
    return golden


def is_deployment_yaml(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001
        return False
    return isinstance(doc, dict) and "dependencies" not in doc and ("endpoint_name" in doc or "instance_type" in doc)


def main():
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    # The empty code folder cannot live in git: create it for the run.
    (FIXTURES / "refused" / "empty-code").mkdir(parents=True, exist_ok=True)
    yamls = sorted(
        p
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.suffix.lower() in (".yml", ".yaml") and is_deployment_yaml(p)
    )
    for path in yamls:
        sink = io.StringIO()
        with redirect_stdout(sink), redirect_stderr(sink):
            golden = run_one(path)
        out = path.with_name(path.name + ".golden.json")
        out.write_text(json.dumps(golden, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        state = "refused" if golden["refused"] else "ok"
        print(f"{state:8} {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
