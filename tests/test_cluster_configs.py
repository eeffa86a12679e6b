"""Every file under cluster/ (and the jobs' runtime env) validated against what will read it. No Ray cluster.

- cluster/aws.yaml: ray's own ray-schema.json (jsonschema), then ray's prepare_config + validate_config,
  which is what `ray up` runs before it talks to AWS.
- cluster/serve_config.yaml and the RayService's serveConfigV2: ray.serve.schema.ServeDeploySchema, plus a
  check for unknown keys (Serve's models accept extra keys for forward compatibility, so a typo would pass).
- KubeRay manifests: the OpenAPI v3 schemas of KubeRay's own v1 CRDs (../shared/kuberay/, see _crd_validator),
  read the way the API server's strict field validation reads them; plus the few rules only KubeRay's operator
  knows, resources on every container, GPUs on GPU groups, no inline secrets.
- The jobs' entrypoints in the manifests parse with semcolor.cli.build_parser(), and ask for no more GPUs
  than their cluster can have.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv
from ray.serve.schema import ServeDeploySchema

from semcolor.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
JOBS = REPO / "jobs"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
KUBERAY_CRDS = REPO.parent / "shared" / "kuberay"  # the checkout sits beside shared/
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}
AWS_CONFIG = CLUSTER / "aws.yaml"
SERVE_CONFIG = CLUSTER / "serve_config.yaml"
KUBERAY_MANIFESTS = sorted(CLUSTER / n for n in ("rayjob-train.yaml", "rayjob-colorize.yaml", "rayservice.yaml"))
RAYJOBS = [p for p in KUBERAY_MANIFESTS if p.name.startswith("rayjob-")]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _from_openapi(node: Any) -> Any:
    """A Kubernetes structural schema (OpenAPI v3) as JSON Schema, with what the API server adds to it:

    - `x-kubernetes-int-or-string: true`: an integer or a string (quantities, ports);
    - `nullable: true`: null is allowed too;
    - `x-kubernetes-list-type: set`: unique items; `map`: unique `x-kubernetes-list-map-keys` (the keyword
      is checked by _CRDValidator, with the keys' defaults filled in as the API server does);
    - strict field validation (`kubectl apply`'s default): a field the schema does not declare is an error, not
      pruned, so every object with `properties` is closed unless it has `x-kubernetes-preserve-unknown-fields`
      or an `additionalProperties` of its own (a map).
    Formats (int32, date-time) are not checked, nor the CRD's CEL rules (`x-kubernetes-validations`), nor
    ObjectMeta (the CRD says only `metadata: {type: object}`; the API server checks it itself).
    """
    if isinstance(node, list):
        return [_from_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _from_openapi(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _list_map_keys(validator, keys, instance, schema):
    if schema.get("x-kubernetes-list-type") != "map" or not validator.is_type(instance, "array"):
        return
    defaults = {k: schema.get("items", {}).get("properties", {}).get(k, {}).get("default") for k in keys}
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if isinstance(item, dict):
            key = tuple(item.get(k, defaults[k]) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entries [{seen[key]}] and [{i}]: {dict(zip(keys, key))}")
            seen.setdefault(key, i)


_CRDValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                            {"x-kubernetes-list-map-keys": _list_map_keys})


@functools.cache
def _crd_schema(kind: str) -> dict:
    """spec.versions[name=v1].schema.openAPIV3Schema of KubeRay's CRD for `kind`, converted (_from_openapi), with
    apiVersion and kind pinned to the CRD's group/v1 and kind: they pick the CRD and its version."""
    path = KUBERAY_CRDS / CRD_FILES[kind]
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind, path
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["served"] and v1["storage"], f"{path.name}: v1 is not the served, stored version"
    schema = _from_openapi(v1["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({"apiVersion", "kind", *schema.get("required", [])})
    return schema


def _crd_validator(kind: str) -> jsonschema.protocols.Validator:
    if not KUBERAY_CRDS.is_dir():
        pytest.skip(f"KubeRay's CRDs not found: {KUBERAY_CRDS} (the shared/ folder beside the checkout) is absent")
    return _CRDValidator(_crd_schema(kind))


def _kuberay_errors(doc: dict) -> list[tuple[str, str]]:
    """(JSON path, message) for each way `doc` breaks the v1 CRD of its kind."""
    if doc.get("kind") not in CRD_FILES:
        return [("$.kind", f"{doc.get('kind')!r} is not one of {sorted(CRD_FILES)}")]
    return [(e.json_path, e.message) for e in _crd_validator(doc["kind"]).iter_errors(doc)]


SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")  # KubeRay rayjob_types.go


def _beyond_the_crd(doc: dict) -> list[str]:
    """What the CRD schema lets through and KubeRay's operator or the pod API refuses later (the RayJob fails, or
    its pods are never created): the rules these manifests could break."""
    errors = []
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        if spec.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
            errors.append(f"submissionMode {spec['submissionMode']!r} is not one of {SUBMISSION_MODES}")
        if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
            errors.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes (operator's validation.go)")
    for group, c in _containers(doc):
        for env in c.get("env", []):
            if env.get("value") and "valueFrom" in env:
                errors.append(f"{group}/{c['name']}: env {env['name']} has both value and valueFrom (core/v1)")
    return errors


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]["rayClusterConfig"]


def _groups(doc: dict) -> list[tuple[str, dict]]:
    """(name, group spec) for the head ("head") and every worker group."""
    spec = _cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]


def _containers(doc: dict) -> list[tuple[str, dict]]:
    out = []
    for name, group in _groups(doc):
        pod = group["template"]["spec"]
        out += [(name, c) for c in pod.get("containers", []) + pod.get("initContainers", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        out += [("submitter", c) for c in doc["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    return out


def _gpus(group: dict) -> int:
    """nvidia.com/gpu limit of the group's Ray container (the first container)."""
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


# --------------------------------------------------------------------------------------- inventory


def test_every_file_under_cluster_is_covered():
    """A new file in cluster/ must get a validator here; nothing escapes the checks below."""
    covered = {AWS_CONFIG, SERVE_CONFIG, CLUSTER / "Dockerfile", *KUBERAY_MANIFESTS}
    present = {p for p in CLUSTER.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert present - covered == set(), f"files under cluster/ without a validator: {sorted(present - covered)}"
    assert covered - present == set(), f"validated files missing: {sorted(covered - present)}"


# --------------------------------------------------------------------------------------- ray up


def test_aws_config_validates_against_rays_schema():
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(_load(AWS_CONFIG), schema)


def test_aws_config_passes_ray_up_preparation():
    """prepare_config (fill in the AWS defaults) + validate_config: `ray up`'s steps before any AWS call."""
    config = prepare_config(copy.deepcopy(_load(AWS_CONFIG)))
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]


def test_rays_schema_rejects_a_misspelt_field():
    """The check above can fail: ray-schema.json is closed at the levels we write."""
    schema = json.loads(RAY_SCHEMA.read_text())
    bad = _load(AWS_CONFIG)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(bad, schema)


def test_aws_node_types_match_their_role():
    config = _load(AWS_CONFIG)
    types = config["available_node_types"]
    assert {"head", "gpu_worker", "cpu_worker"} <= set(types)
    gpu_families = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.")
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(gpu_families)
    for name in ("head", "cpu_worker"):
        assert not types[name]["node_config"]["InstanceType"].startswith(gpu_families), name
    assert types["head"]["resources"].get("CPU") == 0, "no tasks on the head: it runs the drivers"
    # images: Ray's own, of the installed Ray version, GPU image on the GPU workers
    assert types["gpu_worker"]["docker"]["worker_image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    for image in (config["docker"]["image"], config["docker"]["head_image"],
                  types["cpu_worker"]["docker"]["worker_image"]):
        assert image.startswith(f"rayproject/ray:{ray.__version__}-"), image
    # token auth on every node, the token file shipped from the submitter's home, never from the repo
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, cmd
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert {".git", ".venv", "runs"} <= set(config["rsync_exclude"])


# --------------------------------------------------------------------------------------- Serve


def _model_of(annotation: Any) -> type | None:
    """The pydantic model inside an annotation (Optional[M], Union[dict, M], List[M]), if any."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _unknown_keys(model: type, data: Any, path: str = "") -> list[str]:
    """Keys that `model` (a pydantic model) does not define, recursively; Serve's schemas let them pass."""
    if isinstance(data, list):
        return [k for i, item in enumerate(data) for k in _unknown_keys(model, item, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    fields = model.model_fields
    names = {n: f for n, f in fields.items()} | {f.alias: f for f in fields.values() if f.alias}
    out = []
    for key, value in data.items():
        if key not in names:
            out.append(f"{path}.{key}")
            continue
        sub = _model_of(names[key].annotation)
        if sub is not None:
            out += _unknown_keys(sub, value, f"{path}.{key}")
    return out


def _check_serve_config(config: dict) -> None:
    ServeDeploySchema.model_validate(config)
    assert _unknown_keys(ServeDeploySchema, config) == []
    # Union[dict, AutoscalingConfig] lets a dict through unchecked: validate it against the model itself.
    from ray.serve.config import AutoscalingConfig

    for app in config["applications"]:
        if "runtime_env" in app:
            _check_runtime_env(app["runtime_env"])
        for dep in app.get("deployments", []):
            if isinstance(dep.get("autoscaling_config"), dict):
                AutoscalingConfig.model_validate(dep["autoscaling_config"])


def _serve_config_v2() -> dict:
    doc = _load(CLUSTER / "rayservice.yaml")
    return yaml.safe_load(doc["spec"]["serveConfigV2"])


def test_serve_config_validates_against_serve_deploy_schema():
    _check_serve_config(_load(SERVE_CONFIG))


def test_rayservice_serve_config_v2_validates_and_equals_serve_config():
    v2 = _serve_config_v2()
    _check_serve_config(v2)
    assert v2 == _load(SERVE_CONFIG), "serveConfigV2 in cluster/rayservice.yaml drifted from cluster/serve_config.yaml"


@pytest.mark.parametrize("where, bad_key", [
    ("top", "http_option"),
    ("http", "prot"),
    ("app", "import_paths"),
    ("deployment", "num_replica"),
    ("autoscaling", "target_ongoing_request"),
    ("actor", "num_gpu"),
])
def test_serve_checks_reject_a_misspelt_key(where, bad_key):
    """The checks can fail: a typo at any level (including a per-deployment override block) is caught."""
    config = _load(SERVE_CONFIG)
    app = config["applications"][0]
    dep = {"name": "Colorizer", "autoscaling_config": {"min_replicas": 1, "max_replicas": 2},
           "ray_actor_options": {"num_cpus": 1}}
    app["deployments"] = [dep]
    _check_serve_config(config)  # the override block itself is fine
    target = {"top": config, "http": config["http_options"], "app": app, "deployment": dep,
              "autoscaling": dep["autoscaling_config"], "actor": dep["ray_actor_options"]}[where]
    target[bad_key] = 1
    with pytest.raises(Exception):
        _check_serve_config(config)


def test_serve_config_targets_the_project_app():
    config = _load(SERVE_CONFIG)
    (app,) = config["applications"]
    assert app["import_path"] == "semcolor.serve:app"
    assert app["route_prefix"] == "/"
    assert {"checkpoint", "device", "max_batch_size"} <= set(app["args"])
    assert app["args"]["num_gpus"] == 1 and app["args"]["device"] == "cuda"
    # the proxy listens where the RayService's containers expose "serve"
    doc = _load(CLUSTER / "rayservice.yaml")
    for _, c in _containers(doc):
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if "serve" in ports:
            assert ports["serve"] == config["http_options"]["port"]


def _built_app(config: dict):
    """Build the application exactly as Serve does from a config file (import_path + args), no Ray needed."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app

    (app_cfg,) = config["applications"]
    builder = import_attr(app_cfg["import_path"])
    app = call_user_app_builder_with_args_if_necessary(builder, app_cfg["args"])
    return build_app(app, name=app_cfg["name"])


def test_serve_config_builds_the_application():
    """`args` validate against semcolor.serve.builder's typed builder (unknown keys refused), and the deployment asks
    for the GPU and the autoscaling the config promises."""
    config = _load(SERVE_CONFIG)
    built = _built_app(config)
    (app_cfg,) = config["applications"]
    names = {d.name for d in built.deployments}
    for dep in app_cfg.get("deployments", []):
        assert dep["name"] in names, f"deployment override {dep['name']!r} matches nothing in the app ({names})"
    (deployment,) = built.deployments
    assert deployment.ray_actor_options["num_gpus"] == app_cfg["args"]["num_gpus"] == 1
    auto = deployment._deployment_config.autoscaling_config  # noqa: SLF001
    assert auto.max_replicas == app_cfg["args"]["autoscaling_config"]["max_replicas"]
    # GPU pods at maxReplicas can hold max_replicas replicas
    doc = _load(CLUSTER / "rayservice.yaml")
    gpu_pods = sum(g["maxReplicas"] * _gpus(g) for g in _cluster_spec(doc)["workerGroupSpecs"])
    assert auto.max_replicas * deployment.ray_actor_options["num_gpus"] <= gpu_pods


def test_serve_builder_rejects_a_drifted_arg():
    config = _load(SERVE_CONFIG)
    config["applications"][0]["args"]["batch_wait_timeout"] = 0.01  # the CLI flag's name, not the arg's
    with pytest.raises(Exception, match="batch_wait_timeout"):
        _built_app(config)


# --------------------------------------------------------------------------------------- KubeRay


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_kuberay_crd_schema_is_a_valid_json_schema(kind):
    _CRDValidator.check_schema(_crd_validator(kind).schema)


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_validates(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1, "one resource per file"
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert _beyond_the_crd(doc) == []
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__, "rayVersion must be the Ray in the image (and in pyproject)"
    assert spec.get("authOptions", {}).get("mode") == "token", "Ray token auth on (KubeRay >= 1.5.1)"
    assert _kuberay_errors(doc) == []  # last: skips where ../shared is absent


def _head(d: dict) -> dict:
    return _cluster_spec(d)["headGroupSpec"]


def _head_container(d: dict) -> dict:
    return _head(d)["template"]["spec"]["containers"][0]


def _gpu_group(d: dict) -> dict:
    return _cluster_spec(d)["workerGroupSpecs"][0]


HEAD_CONTAINER = "$.spec.rayClusterSpec.headGroupSpec.template.spec.containers[0]"
GPU_GROUP = "$.spec.rayClusterSpec.workerGroupSpecs[0]"


@pytest.mark.parametrize("mutate, path, expect", [
    pytest.param(lambda d: _gpu_group(d).update(maxReplica=3), GPU_GROUP, "'maxReplica' was unexpected",
                 id="misspelt-worker-group-field"),
    pytest.param(lambda d: _cluster_spec(d).update(workerGroupSpec=[]), "$.spec.rayClusterSpec",
                 "'workerGroupSpec' was unexpected", id="misspelt-cluster-field"),
    pytest.param(lambda d: d["spec"].update(shutdownAfterJobFinish=True), "$.spec",
                 "'shutdownAfterJobFinish' was unexpected", id="misspelt-job-field"),
    pytest.param(lambda d: _head_container(d).update(resource={}), HEAD_CONTAINER, "'resource' was unexpected",
                 id="misspelt-container-field"),
    pytest.param(lambda d: _head(d)["template"].update(metadata={"label": {"a": "b"}}),
                 "$.spec.rayClusterSpec.headGroupSpec.template.metadata", "'label' was unexpected",
                 id="misspelt-pod-metadata-field"),
    pytest.param(lambda d: _gpu_group(d).update(replicas=[2]), f"{GPU_GROUP}.replicas", "is not of type 'integer'",
                 id="replicas-as-list"),
    pytest.param(lambda d: d["spec"].update(shutdownAfterJobFinishes="true"), "$.spec.shutdownAfterJobFinishes",
                 "is not of type 'boolean'", id="quoted-boolean"),
    pytest.param(lambda d: _head(d)["rayStartParams"].update({"num-cpus": 0}),
                 "$.spec.rayClusterSpec.headGroupSpec.rayStartParams['num-cpus']", "is not of type 'string'",
                 id="unquoted-ray-start-param"),
    pytest.param(lambda d: _head_container(d)["resources"]["limits"].update(cpu=[4]),
                 f"{HEAD_CONTAINER}.resources.limits.cpu", "is not of type 'integer', 'string'",
                 id="quantity-as-list"),
    pytest.param(lambda d: _cluster_spec(d).pop("headGroupSpec"), "$.spec.rayClusterSpec",
                 "'headGroupSpec' is a required property", id="no-head-group"),
    pytest.param(lambda d: _gpu_group(d).pop("groupName"), GPU_GROUP, "'groupName' is a required property",
                 id="no-group-name"),
    pytest.param(lambda d: _head_container(d).pop("name"), HEAD_CONTAINER, "'name' is a required property",
                 id="no-container-name"),
    pytest.param(lambda d: _cluster_spec(d)["authOptions"].update(mode="Token"),
                 "$.spec.rayClusterSpec.authOptions.mode", "'Token' is not one of", id="bad-auth-mode"),
    pytest.param(lambda d: _head_container(d)["env"].append({"name": "AWS_REGION", "value": "eu-west-1"}),
                 f"{HEAD_CONTAINER}.env", "duplicate entries", id="duplicate-env-var"),
    pytest.param(lambda d: _head_container(d)["ports"].append({"containerPort": 8265, "name": "dash2"}),
                 f"{HEAD_CONTAINER}.ports", "duplicate entries", id="duplicate-port"),
    pytest.param(lambda d: d.update(apiVersion="ray.io/v1alpha1"), "$.apiVersion", "'ray.io/v1' was expected",
                 id="old-api-version"),
])
def test_kuberay_schema_rejects_broken_rayjobs(mutate, path, expect):
    """Each break is refused by the CRD schema itself, at the place it was made."""
    doc = _load(CLUSTER / "rayjob-colorize.yaml")
    assert _kuberay_errors(doc) == []
    mutate(doc)
    errors = _kuberay_errors(doc)
    assert any(p == path and expect in m for p, m in errors), errors


@pytest.mark.parametrize("mutate, expected", [
    pytest.param(lambda d: d["spec"].update(rayClusterSpec=d["spec"].pop("rayClusterConfig")),  # RayJob's name
                 [("$.spec", "'rayClusterSpec' was unexpected"), ("$.spec", "'rayClusterConfig' is a required")],
                 id="rayjobs-field-name"),
    pytest.param(lambda d: d["spec"].update(serveConfigV2=yaml.safe_load(d["spec"]["serveConfigV2"])),
                 [("$.spec.serveConfigV2", "is not of type 'string'")], id="serve-config-as-mapping"),
    pytest.param(lambda d: d["spec"].update(serveConfig={}), [("$.spec", "'serveConfig' was unexpected")],
                 id="serve-config-v1"),
])
def test_kuberay_schema_rejects_a_broken_rayservice(mutate, expected):
    doc = _load(CLUSTER / "rayservice.yaml")
    assert _kuberay_errors(doc) == []
    mutate(doc)
    errors = _kuberay_errors(doc)
    for path, expect in expected:
        assert any(p == path and expect in m for p, m in errors), (path, expect, errors)


@pytest.mark.parametrize("mutate, expect", [
    pytest.param(lambda d: d["spec"].update(submissionMode="K8sMode"), "K8sMode", id="bad-submission-mode"),
    pytest.param(lambda d: d["spec"].update(shutdownAfterJobFinishes=False), "ttlSecondsAfterFinished",
                 id="ttl-without-shutdown"),
    pytest.param(lambda d: _head_container(d)["env"].append(
        {"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        "both value and valueFrom", id="env-value-and-valueFrom"),
])
def test_checks_beyond_the_crd_reject_what_the_crd_accepts(mutate, expect):
    """These breaks pass the CRD schema (no enum on submissionMode, no CEL rule, no oneOf): _beyond_the_crd is
    what catches them. (A RayJob without an entrypoint passes both: the entrypoint tests below need one.)"""
    doc = _load(CLUSTER / "rayjob-colorize.yaml")
    mutate(doc)
    errors = _beyond_the_crd(doc)
    assert errors and any(expect in e for e in errors), errors
    assert _kuberay_errors(doc) == []


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_every_container_has_resources_and_gpu_groups_ask_for_gpus(path):
    doc = _load(path)
    for group, c in _containers(doc):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{path.name}:{group}/{c['name']} lacks {kind}"
        gpu_req, gpu_lim = res["requests"].get("nvidia.com/gpu"), res["limits"].get("nvidia.com/gpu")
        if group.startswith("gpu"):
            assert gpu_lim is not None and int(gpu_lim) >= 1, f"{group} must ask for nvidia.com/gpu"
            assert gpu_req in (None, gpu_lim), "GPU requests must equal limits"
        else:
            assert gpu_lim is None and gpu_req is None, f"{group} is not a GPU group but asks for GPUs"
    for name, group in _groups(doc):
        if name.startswith("gpu"):
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{name}: no GPU-node toleration"
        if name != "head":
            assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_one_image_built_by_cluster_dockerfile(path):
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+)$", dockerfile, re.M)
    assert base and base.group(1).startswith(f"{ray.__version__}-"), "Dockerfile must build on the installed Ray"
    images = {c["image"] for _, c in _containers(_load(path))}
    assert len(images) == 1, images
    (image,) = images
    assert f"ray{ray.__version__}" in image, f"image tag {image!r} must name the Ray version"


SECRETISH = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL)", re.I)


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_credentials_come_from_secrets(path):
    doc = _load(path)
    for group, c in _containers(doc):
        names = set()
        for env in c.get("env", []):
            names.add(env["name"])
            if SECRETISH.search(env["name"]):
                assert "value" not in env, f"{group}: {env['name']} inline; use valueFrom.secretKeyRef"
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{group}: {env['name']} not from a Secret"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names, f"{group}: S3 credentials not wired"


def test_no_credentials_written_anywhere():
    files = [p for p in [*CLUSTER.rglob("*"), *JOBS.rglob("*")] if p.is_file() and p.suffix != ".pyc"]
    key_id = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
    inline = re.compile(r"(aws_secret_access_key|AWS_SECRET_ACCESS_KEY|RAY_AUTH_TOKEN)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}")
    for path in files:
        text = path.read_text(errors="replace")
        assert not key_id.search(text), f"{path}: AWS access key id"
        assert not inline.search(text), f"{path}: inline secret"


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=lambda p: p.name)
def test_head_runs_no_work_and_exposes_the_dashboard(path):
    head = _cluster_spec(_load(path))["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["gcs-server"] == 6379


# --------------------------------------------------------------------------------------- runtime envs


def _check_runtime_env(env: dict) -> None:
    """RuntimeEnv validates the fields it knows but takes any other key as a plugin: refuse unknown keys."""
    assert isinstance(env, dict), env
    unknown = set(env) - set(RuntimeEnv.known_fields)
    assert not unknown, f"unknown runtime_env fields {sorted(unknown)}; known: {sorted(RuntimeEnv.known_fields)}"
    RuntimeEnv(**env)


def test_runtime_env_check_rejects_a_misspelt_field():
    with pytest.raises(AssertionError, match="workin_dir"):
        _check_runtime_env({"workin_dir": "."})
    with pytest.raises(Exception):
        _check_runtime_env({"env_vars": {"A": 1}})  # env var values must be strings


# --------------------------------------------------------------------------------------- RayJob entrypoints


def _entrypoint(doc: dict) -> tuple[str, list[str]]:
    """('train', [args...]) from `python /home/ray/semcolor/jobs/train.py args...`."""
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] in ("python", "python3"), argv
    script = Path(argv[1])
    assert script.parent.name == "jobs" and script.suffix == ".py", argv[1]
    return script.stem, argv[2:]


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_entrypoint_parses_with_the_cli(path):
    doc = _load(path)
    command, args = _entrypoint(doc)
    assert (JOBS / f"{command}.py").is_file(), f"jobs/{command}.py does not exist"
    try:
        ns = build_parser().parse_args([command, *args])
    except SystemExit as exc:  # argparse exits on a bad option
        pytest.fail(f"{path.name}: entrypoint does not parse with `semcolor {command}` (exit {exc.code})")
    assert ns.command == command
    # the script path is where cluster/Dockerfile copies jobs/
    script_dir = str(Path(shlex.split(doc["spec"]["entrypoint"])[1]).parent.parent)
    assert f"WORKDIR {script_dir}" in (CLUSTER / "Dockerfile").read_text()


def test_cli_rejects_a_drifted_entrypoint():
    """The parse check above can fail: an option the CLI does not have exits."""
    command, args = _entrypoint(_load(CLUSTER / "rayjob-train.yaml"))
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *args, "--gpus-per-workers", "1"])


def _gpu_capacity(doc: dict) -> tuple[int, int]:
    """(GPUs at replicas, GPUs at maxReplicas) over the worker groups."""
    groups = _cluster_spec(doc).get("workerGroupSpecs", [])
    now = sum(g.get("replicas", g["minReplicas"]) * _gpus(g) * g.get("numOfHosts", 1) for g in groups)
    most = sum(g["maxReplicas"] * _gpus(g) * g.get("numOfHosts", 1) for g in groups)
    return now, most


def test_train_job_fits_its_cluster():
    doc = _load(CLUSTER / "rayjob-train.yaml")
    command, args = _entrypoint(doc)
    assert command == "train"
    ns = build_parser().parse_args([command, *args])
    now, most = _gpu_capacity(doc)
    from semcolor.options import config_from_args
    from semcolor.train.config import TrainConfig

    workers = config_from_args(TrainConfig, ns).worker_range[1]  # the most an elastic group may grow to
    need = workers * ns.gpus_per_worker
    assert need > 0, "the GPU training job should train on GPUs"
    limit = most if _cluster_spec(doc).get("enableInTreeAutoscaling") else now
    assert need <= limit, f"{workers} workers x {ns.gpus_per_worker} GPU > {limit} GPUs in the cluster"
    assert ns.storage.startswith("s3://"), "checkpoints must outlive the cluster (shutdownAfterJobFinishes)"
    assert ns.name, "a fixed --name makes a retried RayJob resume"


def test_colorize_job_fits_its_cluster():
    doc = _load(CLUSTER / "rayjob-colorize.yaml")
    command, args = _entrypoint(doc)
    assert command == "colorize"
    ns = build_parser().parse_args([command, *args])
    lo, _, hi = str(ns.actors).partition(":")  # N, or MIN:MAX
    lo, hi = int(lo), int(hi or lo)
    now, most = _gpu_capacity(doc)
    assert ns.gpus_per_actor > 0
    assert _cluster_spec(doc)["enableInTreeAutoscaling"] is True
    assert 1 <= lo <= hi and hi * ns.gpus_per_actor <= most, "the actor pool must fit the GPU pods at maxReplicas"
    assert now >= 1, "start with at least one GPU pod"
    groups = {g["groupName"]: g for g in _cluster_spec(doc)["workerGroupSpecs"]}
    assert any(_gpus(g) == 0 for g in groups.values()), "a CPU worker group decodes and encodes"
    assert ns.src.startswith("s3://") and ns.dst.startswith("s3://") and ns.checkpoint.startswith("s3://")


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_runtime_env_yaml_is_a_valid_runtime_env(path):
    doc = _load(path)
    _check_runtime_env(yaml.safe_load(doc["spec"]["runtimeEnvYAML"]))
    assert doc["spec"]["shutdownAfterJobFinishes"] is True


# --------------------------------------------------------------------------------------- jobs/


def test_jobs_runtime_env_is_valid_and_excludes_local_state():
    env = _load(JOBS / "runtime_env.yaml")
    _check_runtime_env(env)
    assert env["working_dir"] == "."
    assert {".git/", ".venv/", "runs/"} <= set(env["excludes"])
    assert "AWS_REGION" in env["env_vars"]
    assert not any(SECRETISH.search(k) for k in env["env_vars"]), "no credentials in runtime_env.yaml"


@pytest.mark.parametrize("command", ["train", "colorize", "evaluate"])
def test_job_entrypoint_reuses_the_cli_and_finds_the_package(command, tmp_path):
    """`python jobs/<cmd>.py --help` from elsewhere with semcolor not installed (the editable install's finder
    removed, as on a cluster image that has the dependencies but not semcolor): semcolor is found through the
    repo-root fallback, and the usage is the CLI subcommand's own."""
    hide_install = ("import runpy, sys; "
                    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
                    f"sys.argv = [{str(JOBS / f'{command}.py')!r}, '--help']; "
                    "sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0]); "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", hide_install], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: semcolor {command} "), out.stdout[:200]
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    for action in sub._actions:  # noqa: SLF001
        for opt in action.option_strings:
            assert opt in out.stdout, f"jobs/{command}.py --help lacks {opt}"
