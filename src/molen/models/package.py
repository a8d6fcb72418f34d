"""A model package: the model's bytes plus everything that describes it, content-addressed.

Logging a model stores, as artifacts of the run under ``ARTIFACT_PATH/``: the model file (in its
flavor's format, :mod:`molen.models.flavors`), ``signature.json``, ``input_example.json``,
``profile.json`` and ``reference.parquet`` (the reference profile and sample monitoring reads),
``requirements.txt``, the model card (``card.md``, ``card.html``), and last ``molen-model.json``:
the manifest naming every other file by hash. The manifest's own hash is the package's identity;
the registry records it, so loading checks every byte against a hash it did not read from the
package itself, and refuses a package whose bytes changed.
"""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.entities import Artifact, ModelVersion
from molen.errors import CorruptObjectError, InvalidNameError, InvalidValueError, NotFoundError
from molen.models.card import card_html, card_markdown
from molen.models.flavors import Saved, load_flavor, save_flavor
from molen.models.signature import OutputSpec, Signature, infer_signature, to_pandas

if TYPE_CHECKING:
    from molen.stores.objects.base import ObjectStore
    from molen.tracking.runs import ActiveRun

__all__ = ["MANIFEST", "LoggedModel", "check_model_name", "load_package", "log_model", "read_manifest"]

MANIFEST = "molen-model.json"
FORMAT = 1
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}")
_LIBRARIES = {
    "sklearn": ("scikit-learn", "numpy", "scipy", "pandas"),
    "xgboost": ("xgboost", "numpy", "pandas"),
    "lightgbm": ("lightgbm", "numpy", "pandas"),
    "generic": ("numpy", "pandas"),
}


class LoggedModel(NamedTuple):
    """What :meth:`ActiveRun.log_model` stored: where, under which hash, and the registered
    version when a name was given."""

    run_id: str
    artifact_path: str
    digest: str
    flavor: str
    version: ModelVersion | None

    @property
    def uri(self) -> str:
        """How :func:`molen.load_model` names it."""
        if self.version is not None:
            return self.version.uri
        return f"run:{self.run_id}/{self.artifact_path}"


def check_model_name(name: Any) -> str:
    """``name`` if it can name a registered model (letters, digits, ``_ . -``), else an error."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidNameError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
            "(no '/', '@' or spaces), starting with a letter or digit"
        )
    return name


def _versions(names: tuple[str, ...], extra: tuple[str, ...]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in (*names, *extra, "molen"):
        for distribution in (name, f"{name}-cpu"):  # xgboost-cpu is XGBoost without CUDA
            try:
                found[name] = importlib_metadata.version(distribution)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return found


def _output_of(model: Any, flavor: str) -> tuple[str | None, OutputSpec | None, list[Any] | None]:
    classes = getattr(model, "classes_", None)
    if classes is not None:
        listed = [value.item() if hasattr(value, "item") else value for value in classes]
        return "classification", OutputSpec("label", tuple(listed)), listed
    if flavor in {"sklearn", "xgboost", "lightgbm"}:
        return "regression", OutputSpec("number"), None
    return None, None, None


def _json_rows(frame: Any) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))  # type: ignore[no-any-return]


def log_model(
    run: ActiveRun,
    model: Any,
    *,
    artifact_path: str = "model",
    name: str | None = None,
    reference: Any = None,
    y_reference: Any = None,
    signature: Signature | dict[str, Any] | None = None,
    input_example: Any = None,
    description: str | None = None,
    serialization: str | None = None,
) -> LoggedModel:
    """Store ``model`` as a package of ``run`` (and register it as ``name`` when given)."""
    from molen.models.profile import profile_frame, reference_sample, sample_parquet

    if name is not None:
        check_model_name(name)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*", artifact_path):
        raise InvalidNameError(f"artifact path {artifact_path!r} is not allowed: use letters, digits, '_.-/'")
    workspace = run.workspace
    saved = save_flavor(model, serialization=serialization or workspace.settings["models.sklearn_format"])
    task, output, classes = _output_of(model, saved.flavor)
    if signature is None:
        source = reference if reference is not None else input_example
        if source is None:
            raise InvalidValueError(
                "log_model needs the training data (reference=X_train) or a signature, "
                "to know what input the model takes"
            )
        chosen = _in_model_order(infer_signature(source, output), model)
    elif isinstance(signature, Signature):
        chosen = signature
    else:
        chosen = Signature.from_dict(signature)
    files: dict[str, bytes] = {saved.file: saved.data}
    files["signature.json"] = json.dumps(chosen.to_dict(), indent=2).encode()
    example_source = input_example if input_example is not None else reference
    if example_source is not None:
        example = to_pandas(example_source, chosen.names)
        files["input_example.json"] = json.dumps(_json_rows(example.head(5)), indent=2).encode()
    profile = None
    sample = None
    argmax_agrees = False
    if reference is not None:
        frame = to_pandas(reference, chosen.names)
        sample, target = reference_sample(frame, y_reference)
        predictions, argmax_agrees = _predictions(
            model, chosen, sample, as_array=_takes_array(model, reference), classes=classes
        )
        profile = profile_frame(frame, target=y_reference, predictions=predictions)
        files["profile.json"] = json.dumps(profile, indent=2).encode()
        files["reference.parquet"] = sample_parquet(sample, target, predictions)
    libraries = _versions(_LIBRARIES[saved.flavor], ("skops",) if saved.serialization == "skops" else ())
    files["requirements.txt"] = "".join(
        f"{package}=={version}\n" for package, version in libraries.items() if package != "python"
    ).encode()
    manifest = _manifest(run, saved, name, description, task, classes, chosen, libraries)
    if argmax_agrees:
        manifest["predict_is_argmax"] = True  # serving derives labels from one predict_proba call
    if _takes_array(model, reference if reference is not None else input_example):
        manifest["takes"] = "array"  # fitted on an array: give it one (not a frame it would warn about)
    if sample is not None and workspace.settings["models.importance"]:
        importance = _importance(model, manifest, sample)
        if importance:
            manifest["importance"] = importance
    markdown = card_markdown(manifest, profile=profile)
    files["card.md"] = markdown.encode()
    files["card.html"] = card_html(
        markdown, title=f"Model card: {name or artifact_path}", profile=profile
    ).encode()
    manifest["files"] = {}
    for file, data in files.items():
        artifact = run._attach(f"{artifact_path}/{file}", run._store_object(data), len(data))
        manifest["files"][file] = {"digest": artifact.digest, "size": artifact.size}
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    digest = run._store_object(manifest_bytes)
    run._attach(f"{artifact_path}/{MANIFEST}", digest, len(manifest_bytes))
    version = None
    if name is not None and not os.environ.get(NO_REGISTER_ENV):
        from molen.registry.service import register_package

        version = register_package(
            workspace,
            name,
            run_id=run.id,
            artifact_path=artifact_path,
            digest=digest,
            flavor=saved.flavor,
            description=description,
        )
    return LoggedModel(run.id, artifact_path, digest, saved.flavor, version)


#: Set while `molen repro --verify` rebuilds a run: models are stored, not registered again.
NO_REGISTER_ENV = "MOLEN_NO_REGISTER"


def _importance(model: Any, manifest: dict[str, Any], sample: Any) -> dict[str, float] | None:
    """Global feature importance (mean |SHAP|) on the reference sample, when SHAP is installed."""
    import importlib.util
    import logging

    if importlib.util.find_spec("shap") is None:
        return None
    from molen.explain.shapley import global_importance
    from molen.models.predictor import Predictor

    try:
        predictor = Predictor(model, {**manifest, "files": {}}, name=None, version=None, digest="")
        return global_importance(predictor, sample)
    except Exception as exc:  # importance is a convenience: the model is logged without it
        logging.getLogger("molen.models").warning("global importance not computed: %s", exc)
        return None


def _takes_array(model: Any, reference: Any) -> bool:
    fitted_on_array = hasattr(model, "n_features_in_") and not hasattr(model, "feature_names_in_")
    return fitted_on_array and type(reference).__module__ == "numpy"


def _in_model_order(signature: Signature, model: Any) -> Signature:
    """The signature with its columns in the order the model was fitted on (scikit-learn
    checks the order), when the model knows it and the columns are the same."""
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is None:
        return signature
    order = [str(name) for name in fitted]
    by_name = {spec.name: spec for spec in signature.inputs}
    if sorted(order) != sorted(by_name) or order == signature.names:
        return signature
    return Signature([by_name[name] for name in order], signature.output)


def _predictions(
    model: Any, signature: Signature, sample: Any, *, as_array: bool, classes: list[Any] | None
) -> tuple[list[Any] | None, bool]:
    """The model's predictions on the reference sample, and whether its predicted labels are
    the classes of highest probability on every row (then one predict_proba call answers both)."""
    import numpy as np

    try:
        frame = signature.prepare(sample)
        given = frame.to_numpy() if as_array else frame
        predicted = model.predict(given)
    except Exception:  # the profile is a convenience: a model that cannot score its own
        return None, False  # training sample is still logged (monitoring then lacks this baseline)
    agrees = False
    proba = getattr(model, "predict_proba", None)
    if classes and proba is not None and len(predicted):
        try:
            derived = np.asarray(classes, dtype=object)[np.asarray(proba(given)).argmax(axis=1)]
            agrees = bool(np.array_equal(derived, np.asarray(predicted, dtype=object)))
        except Exception:  # no usable probabilities: predict and predict_proba stay separate calls
            agrees = False
    return [value.item() if hasattr(value, "item") else value for value in predicted], agrees


def _manifest(
    run: ActiveRun,
    saved: Saved,
    name: str | None,
    description: str | None,
    task: str | None,
    classes: list[Any] | None,
    signature: Signature,
    libraries: dict[str, str],
) -> dict[str, Any]:
    record = run.record()
    return {
        "format": FORMAT,
        "name": name,
        "description": description,
        "flavor": saved.flavor,
        "serialization": saved.serialization,
        "model_file": saved.file,
        "details": saved.details,
        "task": task,
        "classes": classes,
        "signature": signature.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"id": record.id, "experiment": record.experiment, "name": record.name},
        "params": dict(record.params),
        "metrics": {key: value for key, value in record.metrics.items() if value == value},
        "data": [
            {"path": item.path, "digest": item.digest, "role": item.role, "kind": item.kind}
            for item in record.inputs
        ],
        "code": {
            key.removeprefix("molen.git."): value
            for key, value in record.tags.items()
            if key.startswith("molen.git.")
        },
        "libraries": libraries,
    }


def read_manifest(store: ObjectStore, digest: str) -> dict[str, Any]:
    """The manifest stored under ``digest``, its bytes checked against the hash."""
    data = store.get_bytes(digest, verify=True)
    try:
        manifest = json.loads(data)
    except ValueError:
        raise CorruptObjectError(f"object {digest[:12]} is not a model manifest") from None
    if not isinstance(manifest, dict) or "model_file" not in manifest:
        raise CorruptObjectError(f"object {digest[:12]} is not a model manifest")
    if manifest.get("format", 0) > FORMAT:
        raise InvalidValueError("this model package was written by a newer molen; upgrade molen to load it")
    return manifest


def read_file(store: ObjectStore, manifest: dict[str, Any], file: str) -> bytes:
    """A file of the package, checked against the hash its manifest records."""
    entry = manifest["files"].get(file)
    if entry is None:
        raise NotFoundError(f"the model package has no {file}")
    return store.get_bytes(entry["digest"], verify=True)


def load_package(store: ObjectStore, digest: str) -> tuple[Any, dict[str, Any]]:
    """(the model object, its manifest) of the package ``digest``; every byte verified."""
    manifest = read_manifest(store, digest)
    data = read_file(store, manifest, manifest["model_file"])
    model = load_flavor(manifest["flavor"], manifest["serialization"], data, manifest.get("details") or {})
    return model, manifest


def manifest_artifact(artifacts: list[Artifact], artifact_path: str) -> Artifact | None:
    """The manifest among a run's artifacts, for the package logged at ``artifact_path``."""
    wanted = f"{artifact_path.strip('/')}/{MANIFEST}"
    return next((artifact for artifact in artifacts if artifact.path == wanted), None)
