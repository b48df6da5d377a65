"""The production files of deploy/ and the Dockerfile, checked with the tools their platforms use.

No Docker engine and no helm binary run here, so each file is checked against its platform's own schema or
parser, all vendored under tests/schemas/ (tests/schemas/README.md says where each comes from):
- deploy/docker-compose.yaml: `check-jsonschema` (PyPI) with the Compose Specification's JSON schema;
- deploy/helm/values.yaml: merged over the Dagster chart's default values as `helm` merges them, validated
  with `jsonschema` against the chart's values.schema.json (and the user-deployments subchart's); the
  Kubernetes objects inside (volumes, mounts, env, probes, resources, security contexts) are parsed into
  the `kubernetes` client's models by dagster-k8s, as its run launcher does;
- Dockerfile: BuildKit's parser (the `dockerfile` package), and what it copies against .dockerignore;
- deploy/dagster.yaml: Dagster's own instance-config validation (without a database: the tests of
  test_production.py run it on a real Postgres).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SCHEMAS = REPO / "tests" / "schemas"
DAGSTER_SERVICES = ("dirsync-code", "webserver", "daemon")
WAREHOUSE_MOUNT = "/opt/dirsync/warehouse"
DIRSYNC_CONFIG = "/opt/dirsync/dirsync.yaml"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- deploy/dagster.yaml -------------------------------------------------------------------------------

def test_instance_config_is_valid_for_dagster(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any key Dagster does not accept
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in postgres.items() if isinstance(v, dict)} == {
        "hostname": {"env": "DAGSTER_POSTGRES_HOST"}, "port": {"env": "DAGSTER_POSTGRES_PORT"},
        "username": {"env": "DAGSTER_POSTGRES_USER"}, "password": {"env": "DAGSTER_POSTGRES_PASSWORD"},
        "db_name": {"env": "DAGSTER_POSTGRES_DB"},
    }
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 2
    assert config["run_monitoring"]["enabled"] is True


def test_instance_config_keeps_the_local_behaviour():
    """Same telemetry and stuck-run limit as the repo's dagster.yaml; what differs is storage and the queue."""
    local, deploy = load_yaml(REPO / "dagster.yaml"), load_yaml(DEPLOY / "dagster.yaml")
    assert deploy["telemetry"] == local["telemetry"]
    assert deploy["run_monitoring"]["max_runtime_seconds"] == local["run_monitoring"]["max_runtime_seconds"]
    assert "sqlite" not in json.dumps(deploy)


# --- deploy/docker-compose.yaml --------------------------------------------------------------------------

def check_jsonschema(schema: Path, document: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--schemafile", str(schema),
                           str(document)], capture_output=True, text=True)


def test_compose_file_matches_the_compose_specification():
    result = check_jsonschema(SCHEMAS / "compose-spec.json", DEPLOY / "docker-compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_a_broken_file(tmp_path):
    """The validation above can fail: a misspelt depends_on condition and an unknown service key are refused."""
    compose = load_yaml(DEPLOY / "docker-compose.yaml")
    compose["services"]["webserver"]["depends_on"]["postgres"]["condition"] = "service_healty"
    compose["services"]["daemon"]["restart_policy"] = "always"
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(yaml.safe_dump(compose))
    result = check_jsonschema(SCHEMAS / "compose-spec.json", broken)
    assert result.returncode == 1
    assert "service_healty" in result.stdout and "restart_policy" in result.stdout


def test_compose_services_share_the_instance_the_config_and_the_warehouse():
    compose = load_yaml(DEPLOY / "docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", *DAGSTER_SERVICES}
    images = {services[name]["image"] for name in DAGSTER_SERVICES}
    assert len(images) == 1, "webserver, daemon and code server run one image (one set of Dagster versions)"
    for name in DAGSTER_SERVICES:  # built here, never pulled: a registry's "dirsync" image is someone else's
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
    for name in DAGSTER_SERVICES:
        service = services[name]
        env = service["environment"]
        assert set(env) >= {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                            "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"}
        assert env["DIRSYNC_CONFIG"] == DIRSYNC_CONFIG
        targets = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert targets[WAREHOUSE_MOUNT] == "warehouse", f"{name} must see the shared warehouse volume"
        assert targets["/opt/dagster/dagster_home/storage"] == "dagster-storage"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "warehouse" in compose["volumes"] and "postgres-data" in compose["volumes"]
    # Only the UI is published, on localhost unless DAGSTER_UI_BIND says otherwise.
    assert [s for s in services if "ports" in s and s != "webserver"] == []
    assert services["webserver"]["ports"] == ["${DAGSTER_UI_BIND:-127.0.0.1:3000}:3000"]


def test_compose_workspace_points_at_the_code_server():
    compose = load_yaml(DEPLOY / "docker-compose.yaml")
    server = load_yaml(DEPLOY / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert server["host"] == "dirsync-code" and server["host"] in compose["services"]
    assert server["location_name"] == tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"][
        "code_location_name"]
    assert str(server["port"]) in dockerfile_cmd(), "the image's gRPC server listens on the workspace's port"
    assert str(server["port"]) in " ".join(compose["services"]["dirsync-code"]["healthcheck"]["test"])


def test_compose_holds_no_secret():
    text = (DEPLOY / "docker-compose.yaml").read_text()
    for line in text.splitlines():
        if "PASSWORD" in line and ":" in line:
            value = line.split(":", 1)[1].strip()
            assert value.startswith("${DAGSTER_POSTGRES_PASSWORD:?"), f"a password in the Compose file: {line}"
    example = dict(line.split("=", 1) for line in (DEPLOY / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["DAGSTER_POSTGRES_PASSWORD"] == "", "the example env file must not carry a usable password"
    ignored = (REPO / ".gitignore").read_text().split()
    assert "deploy/.env" in ignored and "deploy/secrets/" in ignored


# --- Dockerfile and .dockerignore ------------------------------------------------------------------------

def dockerfile_commands() -> list:
    import dockerfile

    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def dockerfile_cmd() -> str:
    return " ".join(json.loads(next(c for c in dockerfile_commands() if c.cmd == "CMD").original[4:]))


def docker_context_includes(path: str) -> bool:
    """Whether `docker build` sends ``path`` (relative to the repo) in its context, by .dockerignore's rules
    (the last matching pattern wins; ``!`` re-includes)."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path] + [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) or pattern == "**"
               for c in candidates):
            included = negate
    return included


def test_dockerfile_parses_and_copies_only_what_the_context_sends():
    commands = dockerfile_commands()
    assert commands[0].cmd == "ARG" and any(c.cmd == "FROM" for c in commands)
    copied = [src for c in commands if c.cmd == "COPY" for src in c.value[:-1]]
    assert copied, "the Dockerfile copies the project"
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repo"
        assert docker_context_includes(src), f"COPY {src}: .dockerignore keeps it out of the build context"
    for secret in ("secrets/sa.json", "deploy/.env", "deploy/secrets/acme.json", "data/registry.sqlite",
                   ".dagster_home/storage/x", ".venv/bin/python"):
        assert not docker_context_includes(secret), f"{secret} would be sent to the image build"


def test_image_runs_unprivileged_and_serves_the_code_location():
    commands = dockerfile_commands()
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    module = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert dockerfile_cmd().startswith("dagster api grpc") and f"--module-name {module}" in dockerfile_cmd()
    env = " ".join(c.original for c in commands if c.cmd == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in env and f"DIRSYNC_CONFIG={DIRSYNC_CONFIG}" in env


def test_image_extras_are_pinned_by_the_lock():
    """The image installs `-c requirements.lock ".[EXTRAS]"`: every extra it may use is pinned there."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = {re.split(r"==", line)[0].lower(): line.strip() for line in (REPO / "requirements.lock").read_text().splitlines()
            if "==" in line}
    default_extra = next(c.value[0].split("=", 1)[1] for c in dockerfile_commands()
                         if c.cmd == "ARG" and c.value[0].startswith("EXTRAS="))
    for extra in (default_extra, "docker", "postgres"):
        for requirement in project["optional-dependencies"][extra]:
            name, version = requirement.split("==")
            assert lock.get(name.lower()) == f"{name}=={version}", f"{requirement} is not pinned in requirements.lock"


def test_deployment_config_lists_no_connection_and_puts_the_warehouse_on_the_volume():
    config = load_yaml(DEPLOY / "dirsync.yaml")
    assert config["connections"] == [], "organisations are added at run time (dirsync connections add)"
    assert config["warehouse"]["path"] == WAREHOUSE_MOUNT


# --- deploy/helm/values.yaml ------------------------------------------------------------------------------

def helm_merge(defaults, overrides):
    """Helm's coalescing of a chart's values with a user's: maps merge key by key, anything else replaces,
    and null deletes the chart's key."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_validator(schema_path: Path):
    """A validator for one of the chart's schemas. Its Kubernetes types are `$ref`s to an online copy of the
    Kubernetes OpenAPI definitions; offline they resolve to the schema's own type checks, and the objects
    are checked against the `kubernetes` models instead (test_helm_kubernetes_objects_parse)."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schema = json.loads(schema_path.read_text())
    remote = _remote_refs(schema)

    def retrieve(uri: str) -> Resource:
        assert "kubernetes-json-schema" in uri, f"unexpected remote schema {uri}"
        contents: dict = {}
        for pointer in remote[uri]:  # every definition the chart's schema points at, as {} (accept)
            node = contents
            for part in pointer.strip("/").split("/"):
                node = node.setdefault(part, {})
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, registry=Registry(retrieve=retrieve))


def _remote_refs(node, found: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Remote `$ref`s of a schema: document URI -> the JSON pointers used in it."""
    found = {} if found is None else found
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("http"):
            uri, _, pointer = ref.partition("#")
            found.setdefault(uri, set()).add(pointer)
        for value in node.values():
            _remote_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _remote_refs(value, found)
    return found


def merged_chart_values() -> dict:
    return helm_merge(load_yaml(SCHEMAS / "dagster-helm" / "values.yaml"), load_yaml(DEPLOY / "helm" / "values.yaml"))


def schema_errors(validator, values) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values))


def test_helm_values_match_the_dagster_chart_schema():
    values = merged_chart_values()
    assert schema_errors(chart_validator(SCHEMAS / "dagster-helm" / "values.schema.json"), values) == []
    # Helm also validates the user-deployments subchart's values (its defaults + the parent's section + global).
    sub = SCHEMAS / "dagster-helm" / "dagster-user-deployments"
    sub_values = helm_merge(load_yaml(sub / "values.yaml"), values["dagster-user-deployments"])
    sub_values["global"] = helm_merge(sub_values.get("global") or {}, values["global"])
    assert schema_errors(chart_validator(sub / "values.schema.json"), sub_values) == []


def test_helm_schema_check_catches_broken_values():
    values = merged_chart_values()
    values["concurrency"]["runs"]["tagConcurrencyLimits"][0]["limt"] = 1
    values["dagsterDaemon"]["runCoordinator"]["type"] = "QueuedCoordinator"
    values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicy"] = "Sometimes"
    errors = schema_errors(chart_validator(SCHEMAS / "dagster-helm" / "values.schema.json"), values)
    assert any("limt" in e for e in errors), errors
    assert any("QueuedCoordinator" in e for e in errors), errors
    assert any("Sometimes" in e for e in errors), errors


def dirsync_components(values: dict) -> dict[str, dict]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return {"code server (and run Jobs)": deployment, "webserver": values["dagsterWebserver"],
            "daemon": values["dagsterDaemon"]}


def test_helm_kubernetes_objects_parse():
    """Every Kubernetes object in the values, parsed by dagster-k8s into the `kubernetes` client's models."""
    import kubernetes.client as k8s
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    def parse(model, obj):
        return k8s_model_from_dict(model, k8s_snake_case_dict(model, obj))

    values = merged_chart_values()
    for name, component in dirsync_components(values).items():
        for volume in component["volumes"]:
            parse(k8s.V1Volume, volume)
        for mount in component["volumeMounts"]:
            parse(k8s.V1VolumeMount, mount)
        for env in component["env"]:
            parse(k8s.V1EnvVar, env)
        parse(k8s.V1PodSecurityContext, component["podSecurityContext"])
        parse(k8s.V1ResourceRequirements, component["resources"])
        if component.get("readinessProbe", {}).get("httpGet"):
            parse(k8s.V1Probe, component["readinessProbe"])
    job_spec = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"]
    parse(k8s.V1JobSpec, {"template": {}, **job_spec})
    for manifest in values["extraManifests"]:
        assert manifest["kind"] == "PersistentVolumeClaim"
        parse(k8s.V1PersistentVolumeClaimSpec, manifest["spec"])
    with pytest.raises(Exception, match="mountpath|mount_path|Unexpected keys"):
        parse(k8s.V1VolumeMount, {"name": "warehouse", "mountpath": "/x"})  # the check can fail


def test_helm_components_share_image_config_and_warehouse():
    values = merged_chart_values()
    components = dirsync_components(values)
    images = {json.dumps(c["image"], sort_keys=True) for c in components.values()}
    assert len(images) == 1, "webserver, daemon, code server and run Jobs run one image"
    claim = next(m["metadata"]["name"] for m in values["extraManifests"] if m["kind"] == "PersistentVolumeClaim")
    (pvc,) = values["extraManifests"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "the code server and run Jobs on any node share it"
    for name, component in components.items():
        volumes = {v["name"]: v for v in component["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in component["volumeMounts"]}
        assert volumes[mounts[WAREHOUSE_MOUNT]]["persistentVolumeClaim"]["claimName"] == claim, name
        assert {"name": "DIRSYNC_CONFIG", "value": DIRSYNC_CONFIG} in component["env"], name
        assert component["podSecurityContext"]["runAsNonRoot"] is True, name
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True, "run Jobs inherit volumes, env, image"
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", tomllib.loads(
        (REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]]


def test_helm_values_have_the_concurrency_rules_of_deploy_dagster_yaml():
    values = merged_chart_values()
    instance = load_yaml(DEPLOY / "dagster.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    # The chart refuses limits in both places: they are only under `concurrency`.
    assert coordinator["config"]["queuedRunCoordinator"].get("maxConcurrentRuns") is None
    assert not coordinator["config"]["queuedRunCoordinator"].get("tagConcurrencyLimits")
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] >= instance["concurrency"]["runs"]["max_concurrent_runs"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] and monitoring["maxRuntimeSeconds"] == instance["run_monitoring"]["max_runtime_seconds"]
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]


def test_helm_values_hold_no_secret():
    own = load_yaml(DEPLOY / "helm" / "values.yaml")
    assert own["generatePostgresqlPasswordSecret"] is False, "the chart would store postgresqlPassword in a secret"
    assert "postgresqlPassword" not in own["postgresql"]

    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if re.search(r"password|token|private_?key|secret_?key", key, re.I) and isinstance(value, str):
                    pytest.fail(f"{path}/{key} holds a secret value")
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(own)
