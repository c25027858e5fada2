#!/usr/bin/env python3
"""Golden fixtures for batch endpoints: what `az ml batch-deployment create -f FILE --set-default` and
`az ml batch-endpoint invoke --deployment-name DEP --input ...` send (azure-ai-ml 1.35.2).

The sibling of scripts/az-ml-goldens.py (online deployments), and built on it: the same pinned SDK, the same
recorders for the asset work (code folder hash and upload, inline environments, `@latest` labels, the
workspace GET), loaded from that script. Install the pinned SDK in a virtualenv outside the repository:

    python3 -m venv .venv && .venv/bin/pip install azure-ai-ml==1.35.2 && .venv/bin/python scripts/az-ml-batch-goldens.py

It writes, under tests/fixtures/azml-batch/:
  * `<yaml>.golden.json` beside every batch deployment YAML (a mapping with `endpoint_name`, `compute`,
    `settings`, `type` or `resources`, and no `dependencies`). As az ml's `batch-deployment create` does, the
    loader is chosen by the YAML's `type:` (`model` → load_model_batch_deployment, `pipeline` →
    load_pipeline_component_batch_deployment, anything else → load_batch_deployment), the event's model
    replaces the YAML's (`params_override=[{"model": "azureml:<model ARM id>"}]`), and the SDK's own
    BatchDeploymentOperations.begin_create_or_update runs with only the network replaced;
  * `endpoint-default.golden.json`: the default switch of `--set-default` (`batch_endpoints.get`, then
    `endpoint.defaults = {"deployment_name": NEW}` and `batch_endpoints.begin_create_or_update`) for several
    endpoint GET answers: the PUT body the SDK sends for each;
  * `invoke.golden.json`: `batch_endpoints.invoke(endpoint_name, deployment_name=NEW, input=Input(...))` as
    `az ml batch-endpoint invoke --deployment-name` calls it, for several inputs: the endpoint GET, the data
    asset GET (`--input azureml:NAME:VERSION`), and the POST to the scoring URI (headers without the token).

Bodies are serialised as the 1.35.2 REST client does before a PUT (see scripts/az-ml-goldens.py).
"""

import collections
import importlib.util
import io
import json
import logging
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import yaml

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("az_ml_goldens", HERE / "az-ml-goldens.py")
online = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(online)  # checks the pinned version and installs the network replacements

from azure.ai.ml import Input  # noqa: E402
from azure.ai.ml._restclient.arm_ml_service import models as rest  # noqa: E402
from azure.ai.ml.constants._common import AzureMLResourceType  # noqa: E402
from azure.ai.ml.entities._assets.environment import ANONYMOUS_ENV_NAME  # noqa: E402
from azure.ai.ml.entities._load_functions import (  # noqa: E402
    load_batch_deployment,
    load_model_batch_deployment,
    load_pipeline_component_batch_deployment,
)
from azure.ai.ml.operations._batch_deployment_operations import BatchDeploymentOperations  # noqa: E402
from azure.ai.ml.operations._batch_endpoint_operations import BatchEndpointOperations  # noqa: E402
from azure.ai.ml.operations._code_operations import CodeOperations  # noqa: E402
from azure.ai.ml._scope_dependent_operations import _ScopeDependentOperations  # noqa: E402

PINNED = online.PINNED
SUB, RG, WS, W = online.SUB, online.RG, online.WS, online.W
MODEL_ID = online.MODEL_ID
LOCATION = online.LOCATION
REPO = online.REPO
FIXTURES = REPO / "tests" / "fixtures" / "azml-batch"
SCORING_URI = "https://fraud-batch.eastus.inference.ml.azure.com/jobs"


class BatchRecorder(online.Recorder):
    def __init__(self):
        super().__init__()
        self.endpoint_gets = []
        self.endpoint_put = None
        self.component_deployment_body = None
        self.invoke = None
        self.data_gets = []


# ---------------------------------------------------------------- network replacements (batch)
class FakeBatchEndpoints:
    """The ARM batch endpoint client: GET answers `get_body`, PUT is recorded."""

    def __init__(self, get_body=None):
        self.get_body = get_body

    def get(self, endpoint_name, **kwargs):
        online.REC.endpoint_gets.append(endpoint_name)
        body = self.get_body or {
            "id": f"{W}/batchEndpoints/{endpoint_name}",
            "name": endpoint_name,
            "location": LOCATION,
            "properties": {"authMode": "AADToken", "scoringUri": SCORING_URI},
        }
        return rest.BatchEndpoint(body)

    def begin_create_or_update(self, endpoint_name, body, **kwargs):
        online.REC.endpoint_put = (endpoint_name, online.wire(body))
        return None


class FakeBatchDeployments:
    def begin_create_or_update(self, endpoint_name, deployment_name, body, **kwargs):
        online.REC.deployment_body = online.wire(body)
        return None

    def list(self, endpoint_name, cls=None, **kwargs):
        objs = [SimpleNamespace(name="fraud-model-7"), SimpleNamespace(name="fraud-model-6")]
        return cls(objs) if cls else objs


class FakeComponentBatchDeployments:
    def begin_create_or_update(self, endpoint_name, deployment_name, body, **kwargs):
        online.REC.component_deployment_body = online.wire(body)
        return None


class FakeData:
    """`ml_client.data.get(name, version)` (az ml's --input azureml:NAME:VERSION)."""

    def __init__(self, kind):
        self.kind = kind

    def get(self, name, version):
        online.REC.data_gets.append((name, version))
        return SimpleNamespace(type=self.kind, id=f"{W}/data/{name}/versions/{version}")


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        online.REC.calls.append(("token", scopes))
        return SimpleNamespace(token="golden-token")


class FakeResponse:
    status_code = 200

    def text(self):
        return json.dumps(
            {
                "id": f"{W}/jobs/batchjob-0001",
                "name": "batchjob-0001",
                "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                "properties": {"status": "NotStarted"},
            }
        )


class FakePipeline:
    def post(self, url, json=None, headers=None, **kwargs):
        online.REC.invoke = (url, json, dict(headers or {}))
        return FakeResponse()


def build_batch_operations(endpoint_get=None):
    dep_ops_online = online.build_operations()
    container = dep_ops_online._all_operations
    container.add(AzureMLResourceType.COMPONENT, online.FakeDatastoreOperations())  # any call needs the network
    scope = dep_ops_online._operation_scope
    config = dep_ops_online._operation_config

    endpoints = FakeBatchEndpoints(endpoint_get)
    dep_ops = BatchDeploymentOperations.__new__(BatchDeploymentOperations)
    _ScopeDependentOperations.__init__(dep_ops, scope, config)
    dep_ops._batch_deployment = FakeBatchDeployments()
    dep_ops._component_batch_deployment_operations = FakeComponentBatchDeployments()
    dep_ops._batch_endpoint_operations = endpoints
    dep_ops._component_operations = None
    dep_ops._all_operations = container
    dep_ops._credentials = None
    dep_ops._init_kwargs = {}
    dep_ops._requests_pipeline = None

    ep_ops = BatchEndpointOperations.__new__(BatchEndpointOperations)
    _ScopeDependentOperations.__init__(ep_ops, scope, config)
    ep_ops._batch_operation = endpoints
    ep_ops._batch_deployment_operation = FakeBatchDeployments()
    ep_ops._all_operations = container
    ep_ops._credentials = FakeCredential()
    ep_ops._init_kwargs = {}
    ep_ops._requests_pipeline = FakePipeline()
    return dep_ops, ep_ops


# ---------------------------------------------------------------- one deployment YAML
def load_as_az_ml(yaml_path: Path, params_override):
    """`az ml batch-deployment create`: the loader is chosen by the YAML's `type:` (exact, as the CLI compares)."""
    doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "model":
        return "model", load_model_batch_deployment(source=str(yaml_path), params_override=params_override)
    if kind == "pipeline":
        return "pipeline", load_pipeline_component_batch_deployment(
            source=str(yaml_path), params_override=params_override
        )
    return "batch", load_batch_deployment(source=str(yaml_path), params_override=params_override)


def model_override(yaml_path: Path):
    """The event's model replaces the YAML's; a pipeline component deployment has no model to replace."""
    doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    if isinstance(doc, dict) and doc.get("type") == "pipeline":
        return []
    return [{"model": "azureml:" + MODEL_ID}]


def run_one(yaml_path: Path):
    online.REC = BatchRecorder()
    case_dir = next(p for p in [yaml_path.parent, *yaml_path.parents] if p.parent == FIXTURES)
    golden = collections.OrderedDict(
        [
            ("sdk", f"azure-ai-ml {PINNED}"),
            ("yaml", yaml_path.relative_to(case_dir).as_posix()),
            ("workspace", W),
            ("loader", None),
            ("endpoint", None),
            ("deployment", None),
            ("refused", None),
            ("code", None),
            ("environment", None),
            ("endpoint_get", None),
            ("deployment_body", None),
        ]
    )
    try:
        loader, dep = load_as_az_ml(yaml_path, model_override(yaml_path))
    except Exception as e:  # noqa: BLE001 - the refusal is the golden
        golden["refused"] = online.scrub(e, case_dir)
        return golden
    golden["loader"] = loader
    golden["endpoint"] = dep.endpoint_name
    golden["deployment"] = dep.name
    code_config = getattr(dep, "code_configuration", None)
    yaml_code = code_config.code if code_config else None
    yaml_env = getattr(dep, "environment", None)
    env_version_in_yaml = getattr(yaml_env, "version", None)
    env_auto_increment = getattr(yaml_env, "_auto_increment_version", False)

    dep_ops, _ = build_batch_operations()
    code_ops = dep_ops._all_operations.all_operations[AzureMLResourceType.CODE]
    real_code_create = code_ops.create_or_update
    orig_create = CodeOperations.create_or_update

    def capture_code(code):
        online.REC.code_entity = code
        local = Path(code.path)
        online.REC.code_local = local if local.is_absolute() else Path(code.base_path, local).resolve()
        return real_code_create(code)

    code_ops.create_or_update = capture_code
    try:
        dep_ops.begin_create_or_update(dep)
    except Exception as e:  # noqa: BLE001
        golden["refused"] = online.scrub(e, case_dir)
        return golden
    finally:
        CodeOperations.create_or_update = orig_create

    golden["endpoint_get"] = online.REC.endpoint_gets == [dep.endpoint_name]
    body = online.REC.deployment_body or online.REC.component_deployment_body
    assert body is not None
    props = body["properties"]
    if online.REC.code_entity is not None:
        golden["code"] = online.code_record(yaml_code, online.REC.code_local)
        props["codeConfiguration"]["codeId"] = "{codeId}"
    if online.REC.env_puts:
        assert len(online.REC.env_puts) == 1, online.REC.env_puts
        name, version, env_body = online.REC.env_puts[0]
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
    elif online.REC.labels:
        name, label = online.REC.labels[0]
        golden["environment"] = collections.OrderedDict([("kind", "label"), ("name", name), ("label", label)])
        props["environmentId"] = "{environmentId}"
    elif "environmentId" in props:
        golden["environment"] = collections.OrderedDict(
            [("kind", "reference"), ("environment_id", props["environmentId"])]
        )
    golden["deployment_body"] = body
    return golden


def is_batch_deployment_yaml(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001
        return False
    if not isinstance(doc, dict) or "dependencies" in doc:
        return False
    return any(k in doc for k in ("endpoint_name", "compute", "settings", "type", "resources"))


# ---------------------------------------------------------------- the default switch
GET_BASE = {
    "id": f"{W}/batchEndpoints/fraud-batch",
    "name": "fraud-batch",
    "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints",
    "location": "westeurope",
    "systemData": {"createdAt": "2026-01-05T10:00:00Z", "createdBy": "ml-ops", "createdByType": "User"},
}

ENDPOINT_CASES = [
    (
        "aad-token-with-everything",
        dict(
            GET_BASE,
            tags={"team": "risk", "cost-center": "4711"},
            kind="string",
            identity={
                "type": "SystemAssigned",
                "principalId": "00000000-1111-2222-3333-444444444444",
                "tenantId": "00000000-1111-2222-3333-444444444444",
            },
            sku={"name": "Default", "capacity": 1},
            properties={
                "description": "nightly fraud scoring",
                "properties": {"owner": "ml-platform", "BatchEndpointCreationApiVersion": "2022-05-01"},
                "authMode": "AADToken",
                "defaults": {"deploymentName": "fraud-model-6"},
                "scoringUri": SCORING_URI,
                "swaggerUri": "https://fraud-batch.eastus.inference.ml.azure.com/swagger.json",
                "provisioningState": "Succeeded",
            },
        ),
    ),
    (
        "no-default-yet",
        dict(
            GET_BASE,
            properties={"authMode": "AADToken", "scoringUri": SCORING_URI, "provisioningState": "Succeeded"},
        ),
    ),
    (
        "key-auth-no-tags",
        dict(
            GET_BASE,
            properties={
                "authMode": "Key",
                "description": "",
                "defaults": {"deploymentName": "old"},
                "scoringUri": SCORING_URI,
                "provisioningState": "Succeeded",
            },
        ),
    ),
    (
        "aml-token-empty-maps",
        dict(
            GET_BASE,
            tags={},
            properties={
                "authMode": "AMLToken",
                "properties": {},
                "defaults": {"deploymentName": "old"},
                "scoringUri": SCORING_URI,
                "provisioningState": "Succeeded",
            },
        ),
    ),
]


def endpoint_default_goldens():
    cases = []
    for name, get_body in ENDPOINT_CASES:
        online.REC = BatchRecorder()
        _, ep_ops = build_batch_operations(get_body)
        # az ml batch-deployment create --set-default (azext_mlv2 batch_deployment.py):
        endpoint = ep_ops.get(get_body["name"])
        endpoint.defaults = {"deployment_name": "fraud-model-7"}
        ep_ops.begin_create_or_update(endpoint)
        put_name, put_body = online.REC.endpoint_put
        assert put_name == get_body["name"]
        cases.append(
            collections.OrderedDict(
                [("case", name), ("new_default", "fraud-model-7"), ("get", get_body), ("put", put_body)]
            )
        )
    return collections.OrderedDict(
        [("sdk", f"azure-ai-ml {PINNED}"), ("workspace", W), ("workspace_location", LOCATION), ("cases", cases)]
    )


# ---------------------------------------------------------------- the smoke job (invoke one deployment)
INVOKE_CASES = [
    # (case, --input, --input-type, the data asset's type when --input is azureml:NAME:VERSION[, --job-name])
    ("data-asset-folder", "azureml:heart-unlabeled:3", None, "uri_folder"),
    ("data-asset-file", "azureml:heart-sample:1", None, "uri_file"),
    # With --input-type the data asset is not read: its id is built from NAME:VERSION.
    ("data-asset-typed", "azureml:heart-unlabeled:3", "uri_folder", None),
    # az ml takes any --input starting with "azureml:" for a data asset unless --input-type is given.
    ("datastore-folder", "azureml://datastores/workspaceblobstore/paths/heart/unlabeled/", "uri_folder", None),
    ("datastore-file", "azureml://datastores/workspaceblobstore/paths/heart/sample.csv", "uri_file", None),
    ("https-folder", "https://azuremlexampledata.blob.core.windows.net/data/heart-disease-uci/data", None, None),
    ("https-file", "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample.csv", "uri_file", None),
    # A job named by the caller (az ml batch-endpoint invoke --job-name): how a resumed submission finds its job.
    ("named-job", "azureml:heart-unlabeled:3", None, "uri_folder", "smoke-fraud-model-7-0a1b2c3d"),
]


def cli_input(ml_data, given, input_type):
    """az ml batch-endpoint invoke's --input / --input-type handling (azext_mlv2 batch_endpoint.py)."""
    if input_type is None:
        if given.startswith("azureml:"):
            from azure.ai.ml._utils._arm_id_utils import parse_name_version, remove_aml_prefix

            name, version = parse_name_version(remove_aml_prefix(given))
            data = ml_data.get(name, version)
            return Input(type=data.type, path=data.id)
        return Input(type="uri_folder", path=given)
    return Input(type=input_type, path=given)


def invoke_goldens():
    cases = []
    for name, given, input_type, data_type, *job_name in INVOKE_CASES:
        online.REC = BatchRecorder()
        _, ep_ops = build_batch_operations()
        job_input = cli_input(FakeData(data_type), given, input_type)
        extra = {"job_name": job_name[0]} if job_name else {}
        job = ep_ops.invoke(endpoint_name="fraud-batch", deployment_name="fraud-model-7", input=job_input, **extra)
        url, body, headers = online.REC.invoke
        request_id = headers.pop("repeatability_request-id")
        assert len(request_id) == 36, request_id
        headers["repeatability_request-id"] = "{uuid}"
        assert headers.pop("Authorization") == "Bearer golden-token"
        headers["Authorization"] = "Bearer {token for " + " ".join(online.REC.calls[-1][1]) + "}"
        cases.append(
            collections.OrderedDict(
                [
                    ("case", name),
                    ("input", given),
                    ("input_type", input_type),
                    ("job_name_given", job_name[0] if job_name else None),
                    ("data_asset_get", [f"{n}:{v}" for n, v in online.REC.data_gets]),
                    ("data_asset_type", data_type),
                    ("endpoint_get", online.REC.endpoint_gets),
                    ("url", url),
                    ("headers", collections.OrderedDict(sorted(headers.items()))),
                    ("body", body),
                    ("job_name", job.name),
                ]
            )
        )
    return collections.OrderedDict(
        [("sdk", f"azure-ai-ml {PINNED}"), ("workspace", W), ("scoring_uri", SCORING_URI), ("cases", cases)]
    )


def write(path: Path, value):
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{'refused' if value.get('refused') else 'ok':8} {path.relative_to(REPO)}")


def main():
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    yamls = sorted(
        p
        for p in FIXTURES.rglob("*")
        if p.is_file()
        and p.suffix.lower() in (".yml", ".yaml")
        and "/envs/" not in p.as_posix()
        and "/environment/" not in p.as_posix()
        and is_batch_deployment_yaml(p)
    )
    for path in yamls:
        sink = io.StringIO()
        with redirect_stdout(sink), redirect_stderr(sink):
            golden = run_one(path)
        write(path.with_name(path.name + ".golden.json"), golden)
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        default = endpoint_default_goldens()
        invoke = invoke_goldens()
    write(FIXTURES / "endpoint-default.golden.json", default)
    write(FIXTURES / "invoke.golden.json", invoke)


if __name__ == "__main__":
    sys.exit(main())
