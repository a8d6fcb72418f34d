"""One predictor type for every flavor: the model, its signature, and where it came from."""

from __future__ import annotations

from typing import Any

from molen.errors import InvalidValueError
from molen.models.signature import Signature

__all__ = ["Predictor"]


class Predictor:
    """A loaded model: ``predict(data)`` and, for classifiers, ``predict_proba(data)``.

    Every input is checked against :attr:`signature` first (see
    :meth:`molen.models.signature.Signature.prepare`); pandas, polars, Arrow, row dicts and
    NumPy arrays are accepted. :attr:`lineage` says which run, data and commit made the model.

    Example::

        model = molen.load_model("churn@production")
        model.predict([{"tenure": 12, "plan": "pro"}])
    """

    def __init__(
        self,
        model: Any,
        manifest: dict[str, Any],
        *,
        name: str | None,
        version: int | None,
        digest: str,
        aliases: tuple[str, ...] = (),
        extra_columns: str = "ignore",
        unseen_categories: str = "refuse",
    ) -> None:
        if extra_columns not in {"ignore", "refuse"}:
            raise InvalidValueError(f"extra_columns is 'ignore' or 'refuse', not {extra_columns!r}")
        if unseen_categories not in {"refuse", "allow"}:
            raise InvalidValueError(f"unseen_categories is 'refuse' or 'allow', not {unseen_categories!r}")
        self.model = model
        self.manifest = manifest
        self.name = name
        self.version = version
        self.digest = digest
        self.aliases = aliases
        self.flavor: str = manifest["flavor"]
        self.task: str | None = manifest.get("task")
        self.classes: list[Any] | None = manifest.get("classes")
        self.signature = Signature.from_dict(manifest["signature"])
        self.extra_columns = extra_columns
        self.unseen_categories = unseen_categories
        self._predict = model.predict
        proba = getattr(model, "predict_proba", None) if self.task == "classification" else None
        self._predict_proba = proba
        self._takes_array = manifest.get("takes") == "array"
        self._labels: Any = None
        self._takes_matrix: bool | None = None
        self._argmax = bool(manifest.get("predict_is_argmax")) and proba is not None and bool(self.classes)

    def __repr__(self) -> str:
        where = f"{self.name}/{self.version}" if self.version is not None else self.digest[:12]
        return f"<Predictor {where} ({self.flavor}, {len(self.signature.inputs)} inputs)>"

    @property
    def uri(self) -> str:
        """``NAME/VERSION`` when registered, else ``run:RUN/PATH``."""
        if self.name is not None and self.version is not None:
            return f"{self.name}/{self.version}"
        return f"run:{self.manifest['run']['id']}/{self.manifest.get('artifact_path', 'model')}"

    @property
    def lineage(self) -> dict[str, Any]:
        """The model version, its run, the data versions, the commit and the environment."""
        manifest = self.manifest
        return {
            "model": {
                "name": self.name,
                "version": self.version,
                "digest": self.digest,
                "flavor": self.flavor,
            },
            "run": dict(manifest.get("run") or {}),
            "data": list(manifest.get("data") or []),
            "code": dict(manifest.get("code") or {}),
            "environment": dict(manifest.get("libraries") or {}),
        }

    def validate(self, data: Any) -> Any:
        """``data`` as the checked pandas DataFrame the model receives."""
        return self.signature.prepare(data, extra=self.extra_columns, unseen=self.unseen_categories)

    @property
    def has_proba(self) -> bool:
        """Whether :meth:`predict_proba` answers (classifiers that have it)."""
        return self._predict_proba is not None

    def predict(self, data: Any) -> Any:
        """The model's predictions (a NumPy array) for the rows of ``data``."""
        return self.predict_validated(self.validate(data))

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities, one column per class in :attr:`classes` order (classifiers only)."""
        if self._predict_proba is None:
            raise InvalidValueError(
                f"{self.uri} is a {self.task or 'model'} without class probabilities; use predict"
            )
        return self.predict_proba_validated(self.validate(data))

    def predict_validated(self, frame: Any) -> Any:
        """Predictions for a frame :meth:`validate` returned (no second check)."""
        return self._predict(frame.to_numpy() if self._takes_array else frame)

    def prepare(self, data: Any) -> tuple[Any, Any]:
        """(what the model is given, the checked input columns) for ``data``: a float matrix
        straight from the rows when every input is numeric and the model takes one, else the
        checked frame; raises :class:`~molen.errors.InputSchemaError` like :meth:`validate`."""
        matrix = (
            self.signature.numeric_matrix(data, extra=self.extra_columns) if self.signature.numeric else None
        )
        if matrix is not None:
            if self._takes_matrix is None:
                self._takes_matrix = self._try_matrix(matrix)
            if self._takes_matrix:
                return matrix, matrix
            import pandas as pd

            return pd.DataFrame(matrix, columns=self.signature.names), matrix
        frame = self.validate(data)
        return (frame.to_numpy() if self._takes_array else frame), frame

    def _try_matrix(self, matrix: Any) -> bool:
        """Whether the model answers a bare matrix as it answers the frame (tried once, on the
        first numeric request): it skips the frame checks scikit-learn repeats on every call."""
        import warnings

        import numpy as np
        import pandas as pd

        if self._takes_array:
            return True
        frame = pd.DataFrame(matrix, columns=self.signature.names)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                same = np.array_equal(np.asarray(self._predict(matrix)), np.asarray(self._predict(frame)))
        except Exception:  # needs column names (a ColumnTransformer, say): keep giving frames
            return False
        if same:  # scikit-learn warns on every call that a matrix has no column names: it may
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return bool(same)

    def predict_prepared(self, given: Any) -> Any:
        """Predictions for what :meth:`prepare` returned."""
        return self._predict(given)

    def predict_both_validated(self, frame: Any) -> tuple[Any, Any | None]:
        """(predictions, probabilities or None) for a validated frame."""
        return self.predict_both_prepared(frame.to_numpy() if self._takes_array else frame)

    def predict_both_prepared(self, given: Any) -> tuple[Any, Any | None]:
        """(predictions, probabilities or None) for what :meth:`prepare` returned, with one
        model call when the model's labels are its most probable classes (checked on the
        reference sample when it was logged), else two."""
        if self._predict_proba is None:
            return self._predict(given), None
        probabilities = self._predict_proba(given)
        if self._argmax:
            import numpy as np

            if self._labels is None:
                self._labels = np.asarray(self.classes)
            return self._labels[probabilities.argmax(axis=1)], probabilities
        return self._predict(given), probabilities

    def predict_proba_validated(self, frame: Any) -> Any:
        """Probabilities for a frame :meth:`validate` returned (classifiers only)."""
        if self._predict_proba is None:
            raise InvalidValueError(f"{self.uri} has no class probabilities")
        return self._predict_proba(frame.to_numpy() if self._takes_array else frame)
