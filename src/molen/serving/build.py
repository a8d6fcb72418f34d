"""Deployment packaging: a Docker build context, and Kubernetes manifests.

``molen build docker churn@production -o build/`` writes::

    build/Dockerfile          slim Python, a non-root user, HEALTHCHECK on /v2/health/ready
    build/requirements.txt    pinned: molen's own dependencies and the model's libraries
    build/molen/              molen's code (the package, as installed here)
    build/app/                a molen project holding just this model version and its alias
    build/.dockerignore

The image serves the bundled model with no store to reach. Setting ``MOLEN_TRACKING_URI`` and
``MOLEN_OBJECTS_URL`` (PostgreSQL + S3) at run time serves from the team's registry instead, and
the server then follows the alias as it moves.

``molen build k8s churn@production -o deploy/`` writes a Deployment (liveness and readiness
probes on the V2 health routes, Prometheus scrape annotations), a Service and a
HorizontalPodAutoscaler.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.errors import ConflictError, UsageError

if TYPE_CHECKING:
    from molen.workspace import Workspace

__all__ = ["Built", "build_docker", "build_kubernetes"]

PORT = 8080
_SERVE_EXTRAS = ("fastapi", "uvicorn", "uvloop", "httptools", "orjson", "prometheus-client", "pyarrow")
#: Drivers for serving from the team's stores (PostgreSQL, S3), pinned when installed here.
_TEAM_EXTRAS = ("psycopg", "psycopg-binary", "boto3", "s3fs")  # s3fs: a prediction log in S3


class Built(NamedTuple):
    """What was written, for the CLI to list."""

    folder: Path
    files: list[str]
    uri: str
    version: int


def _empty_target(folder: Path, force: bool) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not force:
            raise ConflictError(f"{folder} is not empty; choose another -o folder or pass --force")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:50] or "model"


def _pinned(name: str) -> str | None:
    for distribution in (name, f"{name}-cpu"):
        try:
            return f"{name}=={metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def requirements(manifest: dict[str, Any]) -> list[str]:
    """Pinned requirements: molen's dependencies and serving extras as installed here, and the
    model's libraries at the versions it was trained with."""
    names: list[str] = []
    for requirement in metadata.requires("molen") or []:
        if "extra ==" in requirement:
            continue
        names.append(re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0])
    names += [*_SERVE_EXTRAS, *_TEAM_EXTRAS]
    pins: dict[str, str] = {}
    for name in names:
        pinned = _pinned(name)
        if pinned:
            pins[name.lower()] = pinned
    for name, version in (manifest.get("libraries") or {}).items():
        if name not in {"python", "molen"}:
            pins[name.lower()] = f"{name}=={version}"
    return sorted(pins.values(), key=str.lower)


def _bundle(uri: str, app: Path, workspace: Workspace) -> tuple[Any, dict[str, Any]]:
    """A molen project at ``app`` holding the version ``uri`` names (objects and registry)."""
    from molen.models.package import read_manifest
    from molen.project import init_project
    from molen.registry.service import register_package, resolve, set_alias
    from molen.workspace import open_workspace

    found = resolve(uri, workspace=workspace)
    if found.version is None:
        raise UsageError(f"{uri!r} is not a registered version; build a registered model (NAME@ALIAS)")
    version = found.version
    manifest = read_manifest(workspace.objects, found.digest)
    init_project(app, experiment="serving")
    (app / ".gitignore").unlink(missing_ok=True)
    bundled = open_workspace(
        app,
        flags={
            "tracking.uri": f"sqlite:///{app / '.molen' / 'molen.db'}",
            "objects.url": str(app / ".molen" / "cache"),
        },
    )
    source, target = workspace.objects, bundled.objects
    for entry in [{"digest": found.digest}, *manifest["files"].values()]:
        target.put_bytes(source.get_bytes(entry["digest"], verify=True))
    register_package(
        bundled,
        version.name,
        run_id=None,
        artifact_path=version.artifact_path,
        digest=version.digest,
        flavor=version.flavor,
        description=version.description,
        version=version.version,
    )  # the same number as in the team's registry
    for alias in version.aliases:
        set_alias(version.name, version.version, alias, workspace=bundled)
    bundled.metadata.close()
    return version, manifest


def _copy_molen(target: Path) -> None:
    import molen

    source = Path(molen.__file__).parent
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _dockerfile(serve_uri: str, python: str) -> str:
    probe = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{PORT}/v2/health/ready', timeout=2)"
    return f"""# Built by molen: serves {serve_uri} on port {PORT}.
FROM python:{python}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PYTHONPATH=/opt/molen

RUN groupadd --system --gid 10001 molen \\
 && useradd --system --uid 10001 --gid molen --home-dir /app --no-create-home molen

COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY molen/ /opt/molen/molen/
COPY --chown=molen:molen app/ /app/
WORKDIR /app
USER molen

EXPOSE {PORT}
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \\
  CMD ["python", "-c", "{probe}"]

# MOLEN_TRACKING_URI / MOLEN_OBJECTS_URL at run time serve from the team's registry instead of
# the bundled copy (and follow the alias); MOLEN_SERVE_TOKEN requires a bearer token.
ENTRYPOINT ["python", "-m", "molen", "serve", "{serve_uri}", "--host", "0.0.0.0", "--port", "{PORT}"]
"""


def build_docker(uri: str, folder: str | Path, *, workspace: Workspace, force: bool = False) -> Built:
    """Write the Docker build context for the model ``uri`` into ``folder``."""
    import platform

    target = Path(folder)
    _empty_target(target, force)
    version, manifest = _bundle(uri, target / "app", workspace)
    serve_uri = uri if "@" in uri else version.uri
    _copy_molen(target / "molen")
    python = ".".join(
        (manifest.get("libraries") or {}).get("python", platform.python_version()).split(".")[:2]
    )
    (target / "requirements.txt").write_text("\n".join(requirements(manifest)) + "\n")
    (target / "Dockerfile").write_text(_dockerfile(serve_uri, python))
    (target / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\napp/.molen/log/\n")
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    return Built(target, files, serve_uri, version.version)


def _manifests(name: str, serve_uri: str, image: str, replicas: int) -> list[dict[str, Any]]:
    app = _slug(name)
    labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "molen"}
    described = {"molen.dev/model": serve_uri}
    probe = {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    ready = {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        "initialDelaySeconds": 5,
        "periodSeconds": 5,
        "timeoutSeconds": 3,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "labels": labels, "annotations": described},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
                    "containers": [
                        {
                            "name": "model",
                            "image": image,
                            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                            "livenessProbe": probe,
                            "readinessProbe": ready,
                            "startupProbe": {**probe, "failureThreshold": 30, "periodSeconds": 2},
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "2", "memory": "2Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": False,
                            },
                        }
                    ],
                    "terminationGracePeriodSeconds": 40,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
            "minReplicas": replicas,
            "maxReplicas": max(replicas * 5, 4),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    return [deployment, service, autoscaler]


def build_kubernetes(
    uri: str,
    folder: str | Path,
    *,
    workspace: Workspace,
    image: str | None = None,
    replicas: int = 2,
    force: bool = False,
) -> Built:
    """Write Deployment, Service and HorizontalPodAutoscaler manifests for the model ``uri``."""
    import yaml

    from molen.registry.service import resolve

    found = resolve(uri, workspace=workspace)
    if found.version is None:
        raise UsageError(f"{uri!r} is not a registered version; build a registered model (NAME@ALIAS)")
    target = Path(folder)
    _empty_target(target, force)
    serve_uri = uri if "@" in uri else found.version.uri
    chosen_image = image or f"{_slug(found.version.name)}:{found.version.version}"

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: manifests read plainly
            return True

    written = []
    for manifest in _manifests(found.version.name, serve_uri, chosen_image, replicas):
        name = f"{manifest['kind'].lower()}.yaml"
        (target / name).write_text(yaml.dump(manifest, Dumper=Plain, sort_keys=False))
        written.append(name)
    return Built(target, written, serve_uri, found.version.version)
