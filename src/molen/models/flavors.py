"""How each kind of model is written to bytes and read back: the flavors.

=============  ==========================================  =========================================
flavor         format                                      loading runs code from the file?
=============  ==========================================  =========================================
``xgboost``    XGBoost's own UBJSON model file              no
``lightgbm``   LightGBM's own text model file               no
``sklearn``    ``pickle`` (default) or ``skops``            pickle: yes; skops: no (only listed types)
``generic``    ``pickle`` (cloudpickle for ``__main__``)    yes
=============  ==========================================  =========================================

Pickled bytes are loaded only after their BLAKE3 hash matched the one the registry recorded
(see :mod:`molen.models.package`): tampered bytes are refused. The remaining risk is anyone who
may log a model: whoever can write to the team's stores can run code where models are loaded.
``serialization="skops"`` (or the setting ``models.sklearn_format``) removes it for scikit-learn
at the price of a slower load (skops imports every scikit-learn estimator: about +0.6 s).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from molen.errors import InvalidValueError, MissingDependencyError

__all__ = ["FLAVORS", "Saved", "flavor_of", "load_flavor", "save_flavor"]


class Saved(NamedTuple):
    """A model written to bytes: the flavor, the serialization, the file name and bytes, and
    whatever the loader needs to know (``details``)."""

    flavor: str
    serialization: str
    file: str
    data: bytes
    details: dict[str, Any]


FLAVORS = ("sklearn", "xgboost", "lightgbm", "generic")
_SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def flavor_of(model: Any) -> str:
    """The flavor of ``model``: by the library its class comes from; anything with ``predict``
    is ``generic``."""
    module = type(model).__module__
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith("lightgbm"):
        return "lightgbm"
    if module.startswith("sklearn") or (module.split(".")[0] != "__main__" and _is_sklearn_estimator(model)):
        return "sklearn"
    if callable(getattr(model, "predict", None)):
        return "generic"
    raise InvalidValueError(
        f"cannot log a {type(model).__name__} as a model: it has no predict method "
        "(log a scikit-learn, XGBoost or LightGBM model, or any object with predict(frame))"
    )


def _is_sklearn_estimator(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def save_flavor(model: Any, *, serialization: str | None = None) -> Saved:
    """``model`` as bytes in its flavor's safest format (``serialization`` overrides, where
    a flavor has a choice)."""
    flavor = flavor_of(model)
    if flavor == "xgboost":
        return _save_xgboost(model)
    if flavor == "lightgbm":
        return _save_lightgbm(model)
    if flavor == "sklearn":
        chosen = serialization or "pickle"
        if chosen == "skops":
            return _save_skops(model)
        if chosen != "pickle":
            raise InvalidValueError(f"scikit-learn models are saved as pickle or skops, not {chosen!r}")
        return Saved("sklearn", "pickle", "model.pkl", _pickled(model), {})
    return Saved("generic", "pickle", "model.pkl", _pickled(model), {"class": _class_name(model)})


def load_flavor(flavor: str, serialization: str, data: bytes, details: dict[str, Any]) -> Any:
    """The model object the bytes ``data`` of a :class:`Saved` describe."""
    if flavor == "xgboost":
        return _load_xgboost(data, details)
    if flavor == "lightgbm":
        return _load_lightgbm(data, details)
    if serialization == "skops":
        return _load_skops(data, details)
    if serialization == "pickle":
        import pickle

        try:
            return pickle.loads(data)
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(
                f"loading this {flavor} model needs the Python module {exc.name!r}: install it "
                "in this environment (the model's requirements.txt lists what was used)"
            ) from None
    raise InvalidValueError(f"unknown model serialization {serialization!r}; upgrade molen")


def _class_name(model: Any) -> str:
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def _pickled(model: Any) -> bytes:
    import pickle

    if type(model).__module__ == "__main__":  # a class defined in a script: pickle it by value
        try:
            import cloudpickle
        except ImportError:
            raise MissingDependencyError(
                f"{type(model).__name__} is defined in the script itself; to log it, move it to a "
                "module, or pip install cloudpickle to store the class with the model"
            ) from None
        return bytes(cloudpickle.dumps(model, protocol=5))
    return pickle.dumps(model, protocol=5)


# -- scikit-learn with skops ---------------------------------------------------------------------------


def _skops() -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise MissingDependencyError("the skops format needs skops: pip install skops") from None
    return sio


def _save_skops(model: Any) -> Saved:
    sio = _skops()
    data = sio.dumps(model)
    untrusted = sorted(sio.get_untrusted_types(data=data))
    return Saved("sklearn", "skops", "model.skops", data, {"types": untrusted})


def _load_skops(data: bytes, details: dict[str, Any]) -> Any:
    sio = _skops()
    untrusted = sio.get_untrusted_types(data=data)
    refused = [name for name in untrusted if not name.startswith(_SKOPS_TRUSTED_PREFIXES)]
    if refused:
        raise InvalidValueError(
            f"the skops model file names types outside scikit-learn, NumPy and SciPy ({', '.join(refused)}); "
            "molen does not load them"
        )
    return sio.loads(data, trusted=untrusted)


# -- XGBoost and LightGBM ------------------------------------------------------------------------------


def _save_xgboost(model: Any) -> Saved:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ubj"
        model.save_model(str(path))
        data = path.read_bytes()
    return Saved("xgboost", "ubj", "model.ubj", data, {"class": type(model).__name__})


def _load_xgboost(data: bytes, details: dict[str, Any]) -> Any:
    try:
        import xgboost
    except ImportError:
        raise MissingDependencyError("this model needs XGBoost: pip install xgboost") from None
    kind = getattr(xgboost, details.get("class", "Booster"), None)
    if kind is None:
        raise InvalidValueError(f"unknown XGBoost model class {details.get('class')!r}")
    model = kind()
    model.load_model(bytearray(data))
    return model


def _save_lightgbm(model: Any) -> Saved:
    booster = getattr(model, "booster_", model)
    text = booster.model_to_string()
    details: dict[str, Any] = {"class": type(model).__name__}
    classes = getattr(model, "classes_", None)
    if classes is not None:
        details["classes"] = [value.item() if hasattr(value, "item") else value for value in classes]
    return Saved("lightgbm", "text", "model.txt", text.encode(), details)


class LightGBMModel:
    """A LightGBM booster behind scikit-learn's ``predict``/``predict_proba``: the native
    text file keeps the trees, ``details`` the classes."""

    def __init__(self, booster: Any, details: dict[str, Any]) -> None:
        self.booster = booster
        self.kind = details.get("class", "Booster")
        self.classes_ = details.get("classes")

    def predict(self, data: Any) -> Any:
        import numpy as np

        raw = self.booster.predict(data)
        if self.classes_ is None:
            return raw
        probabilities = self._probabilities(raw)
        return np.asarray(self.classes_)[probabilities.argmax(axis=1)]

    def predict_proba(self, data: Any) -> Any:
        if self.classes_ is None:
            raise AttributeError("predict_proba")
        return self._probabilities(self.booster.predict(data))

    @staticmethod
    def _probabilities(raw: Any) -> Any:
        import numpy as np

        if raw.ndim == 1:
            return np.column_stack([1.0 - raw, raw])
        return raw


def _load_lightgbm(data: bytes, details: dict[str, Any]) -> Any:
    try:
        import lightgbm
    except ImportError:
        raise MissingDependencyError("this model needs LightGBM: pip install lightgbm") from None
    booster = lightgbm.Booster(model_str=data.decode())
    if details.get("class") == "Booster":
        return booster
    return LightGBMModel(booster, details)
