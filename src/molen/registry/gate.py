"""The quality gate: is a candidate version at least as good as the one at an alias?

Both models are scored on the same holdout data (or, without data, their runs' recorded
metrics are compared), each rule is checked, and the verdict (JSON, plus a Markdown summary for
a pull-request comment) is kept in the registry. With no model at the alias yet, the candidate
passes and the verdict says why.

A rules file (``--rules gate.yaml``)::

    rules:
      - metric: auc            # higher is better (the default for all but errors and losses)
        min_delta: 0.0         # candidate - champion must be at least this
      - metric: log_loss
        direction: lower       # lower is better: champion - candidate must be >= min_delta
        min_delta: -0.01       # a slightly worse loss is tolerated
        max_relative_drop: 0.05  # but never more than 5 % worse
      - metric: accuracy
        threshold: 0.8         # and the candidate needs at least 0.8 whatever the champion
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from molen.entities import GateRecord
from molen.errors import InvalidValueError, MissingDependencyError, NotFoundError, UsageError
from molen.registry.service import _user, check_alias, get_version, load_model, resolve
from molen.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from molen.models.predictor import Predictor

__all__ = ["GateRule", "evaluate", "load_rules", "run_gate", "summary_markdown"]

#: Metrics where lower is better; every other metric is higher-is-better unless a rule says so.
LOWER_IS_BETTER = ("rmse", "mse", "mae", "log_loss", "loss", "error", "mape", "brier")


class GateRule(NamedTuple):
    """One check: ``metric`` compared between candidate and champion."""

    metric: str
    direction: str = "higher"
    min_delta: float | None = 0.0
    max_relative_drop: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


def default_direction(metric: str) -> str:
    """``lower`` for errors and losses (by name), else ``higher``."""
    lowered = metric.lower()
    return "lower" if any(word in lowered for word in LOWER_IS_BETTER) else "higher"


def _float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{where}: {value!r} is not a number") from None


def load_rules(path: str | Path) -> list[GateRule]:
    """The rules of a gate file (see the module docstring); each mistake names the rule."""
    import yaml

    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"gate rules {source}: no such file") from None
    except yaml.YAMLError as exc:
        raise InvalidValueError(f"gate rules {source}: not valid YAML ({exc})") from None
    items = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidValueError(f"gate rules {source}: expected a 'rules:' list with at least one rule")
    rules = []
    for number, item in enumerate(items, 1):
        where = f"gate rules {source}, rule {number}"
        if not isinstance(item, dict) or not isinstance(item.get("metric"), str):
            raise InvalidValueError(f"{where}: each rule needs 'metric: NAME'")
        unknown = set(item) - set(GateRule._fields)
        if unknown:
            raise InvalidValueError(
                f"{where}: unknown field {sorted(unknown)[0]!r}; known: {', '.join(GateRule._fields)}"
            )
        direction = item.get("direction", default_direction(item["metric"]))
        if direction not in {"higher", "lower"}:
            raise InvalidValueError(f"{where}: direction is 'higher' or 'lower', not {direction!r}")
        rules.append(
            GateRule(
                item["metric"],
                direction,
                _float(item.get("min_delta", 0.0), where),
                _float(item.get("max_relative_drop"), where),
                _float(item.get("threshold"), where),
            )
        )
    return rules


# -- scoring ------------------------------------------------------------------------------------------


def read_holdout(path: str | Path, target: str) -> tuple[Any, Any, str]:
    """(features, target, data version hash) of a Parquet or CSV holdout file."""
    from molen.data.frames import read_table
    from molen.hashing import hash_file

    source = Path(path)
    frame = read_table(source, what="holdout data")
    if target not in frame.columns:
        raise InvalidValueError(
            f"holdout data {source} has no column {target!r} (--target); "
            f"columns: {', '.join(map(str, frame.columns))}"
        )
    return frame.drop(columns=[target]), frame[target], hash_file(source)


def evaluate(model: Predictor, features: Any, target: Any) -> dict[str, float]:
    """The model's metrics on (``features``, ``target``): accuracy, precision, recall, f1, auc
    and log_loss for classifiers; rmse, mae and r2 for regressors."""
    try:
        from sklearn import metrics
    except ImportError:
        raise MissingDependencyError(
            "gating on holdout data needs scikit-learn: pip install 'molen[models]'"
        ) from None
    import numpy as np

    predicted = model.predict(features)
    truth = np.asarray(target)
    if model.task != "classification":
        errors = truth.astype(float) - np.asarray(predicted, dtype=float)
        return {
            "rmse": float(np.sqrt(np.mean(errors**2))),
            "mae": float(np.mean(np.abs(errors))),
            "r2": float(metrics.r2_score(truth, predicted)),
        }
    classes = list(model.classes or sorted(set(truth.tolist())))
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    options: dict[str, Any] = {"average": average, "zero_division": 0}
    if binary:
        options["pos_label"] = classes[1]
    found = {
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "precision": float(metrics.precision_score(truth, predicted, **options)),
        "recall": float(metrics.recall_score(truth, predicted, **options)),
        "f1": float(metrics.f1_score(truth, predicted, **options)),
    }
    try:
        probabilities = model.predict_proba(features)
    except InvalidValueError:
        return found
    try:
        if binary:
            found["auc"] = float(metrics.roc_auc_score(truth == classes[1], probabilities[:, 1]))
        else:
            found["auc"] = float(
                metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
            )
        found["roc_auc"] = found["auc"]  # scikit-learn's name for it, as training scripts log it
        found["log_loss"] = float(metrics.log_loss(truth, probabilities, labels=classes))
    except ValueError:  # one class only in the holdout: AUC is undefined
        pass
    return found


# -- the verdict ----------------------------------------------------------------------------------------


def _check(rule: GateRule, candidate: float | None, champion: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {**rule.to_dict(), "candidate": candidate, "champion": champion}
    reasons = []
    if candidate is None or (isinstance(candidate, float) and math.isnan(candidate)):
        row.update(passed=False, reason=f"{rule.metric} is not known for the candidate")
        return row
    sign = 1.0 if rule.direction == "higher" else -1.0
    if rule.threshold is not None:
        worse = candidate < rule.threshold if sign > 0 else candidate > rule.threshold
        if worse:
            bound = "at least" if sign > 0 else "at most"
            reasons.append(f"{rule.metric} {candidate:.4g} is not {bound} {rule.threshold:.4g}")
    if champion is not None and not math.isnan(champion):
        improvement = sign * (candidate - champion)
        row["delta"] = candidate - champion
        row["relative"] = (candidate - champion) / abs(champion) if champion else None
        if rule.min_delta is not None and improvement < rule.min_delta - 1e-12:
            reasons.append(
                f"{rule.metric} changed by {candidate - champion:+.4g} "
                f"({'higher' if sign > 0 else 'lower'} is better; "
                f"needed {'+' if sign > 0 else '-'}{rule.min_delta:.4g})"
            )
        if rule.max_relative_drop is not None and champion:
            drop = -improvement / abs(champion)
            if drop > rule.max_relative_drop + 1e-12:
                reasons.append(
                    f"{rule.metric} is {drop:.1%} worse (at most {rule.max_relative_drop:.1%} allowed)"
                )
    elif champion is None:
        row["note"] = "no champion value"
    row.update(passed=not reasons, reason="; ".join(reasons) or "ok")
    return row


def _default_metric(digest: str, workspace: Workspace) -> str:
    """The rule without a rules file: AUC for classifiers, RMSE for regressors."""
    from molen.models.package import read_manifest

    return "rmse" if read_manifest(workspace.objects, digest).get("task") == "regression" else "auc"


def _recorded(
    version_run: str | None, manifest_metrics: dict[str, float], workspace: Workspace
) -> dict[str, float]:
    found = dict(manifest_metrics)
    if version_run is not None:
        try:
            metrics = workspace.metadata.get_run(version_run).metrics
            found = {k: v for k, v in metrics.items() if v == v} or found
        except NotFoundError:
            pass
    if "auc" not in found and "roc_auc" in found:  # one metric, two common names
        found["auc"] = found["roc_auc"]
    return found


def run_gate(
    name: str,
    *,
    candidate: str = "latest",
    against: str = "production",
    data: str | Path | None = None,
    target: str | None = None,
    rules: list[GateRule] | None = None,
    record: bool = True,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """Gate ``name``'s ``candidate`` (a version number or ``latest``) against ``name@against``.

    Returns the verdict (``verdict["passed"]`` decides); it is also kept in the registry unless
    ``record`` is false. Raises :class:`UsageError` for data without ``target``.
    """
    workspace = workspace or open_workspace()
    check_alias(against)
    uri = f"{name}@latest" if candidate == "latest" else f"{name}/{candidate}"
    cand = get_version(uri, workspace=workspace)
    champion_version = workspace.metadata.registry.alias_version(name, against)
    default = _default_metric(cand.digest, workspace)
    rules = [
        rule if rule.metric else rule._replace(metric=default, direction=default_direction(default))
        for rule in (rules or [GateRule("")])
    ]
    verdict: dict[str, Any] = {
        "model": name,
        "candidate": {"version": cand.version, "run_id": cand.run_id, "digest": cand.digest},
        "against": {"alias": against, "version": champion_version},
        "mode": "holdout" if data is not None else "recorded",
        "time": int(time.time() * 1000),
    }
    if champion_version is not None and champion_version == cand.version:
        verdict["note"] = f"version {cand.version} is already @{against}; compared with itself"
    if data is not None:
        if not target:
            raise UsageError("--data needs --target: the column holding the true outcome")
        features, truth, data_digest = read_holdout(data, target)
        verdict["data"] = {"path": str(data), "digest": data_digest, "rows": len(features)}
        cand_metrics = evaluate(load_model(uri, workspace=workspace), features, truth)
        champ_metrics = (
            evaluate(load_model(f"{name}/{champion_version}", workspace=workspace), features, truth)
            if champion_version is not None
            else None
        )
    else:
        from molen.models.package import read_manifest

        cand_metrics = _recorded(
            cand.run_id, read_manifest(workspace.objects, cand.digest).get("metrics") or {}, workspace
        )
        champ_metrics = None
        if champion_version is not None:
            champ = resolve(f"{name}/{champion_version}", workspace=workspace)
            champ_manifest = read_manifest(workspace.objects, champ.digest)
            champ_metrics = _recorded(champ.run_id, champ_manifest.get("metrics") or {}, workspace)
    verdict["metrics"] = {"candidate": cand_metrics, "champion": champ_metrics}
    if champion_version is None:
        checks = [
            _check(rule._replace(min_delta=None, max_relative_drop=None), cand_metrics.get(rule.metric), None)
            for rule in rules
        ]
        verdict["rules"] = checks
        thresholds_ok = all(
            check["passed"] or rule.threshold is None for check, rule in zip(checks, rules, strict=True)
        )
        # without a champion only absolute thresholds can fail; a metric the candidate lacks is
        # not held against it, since there is nothing to compare it with
        verdict["passed"] = thresholds_ok
        verdict["reason"] = (
            f"no model at {name}@{against} yet: the candidate passes"
            if thresholds_ok
            else "no model at the alias yet, but the candidate misses a threshold"
        )
    else:
        assert champ_metrics is not None
        checks = [
            _check(rule, cand_metrics.get(rule.metric), champ_metrics.get(rule.metric)) for rule in rules
        ]
        verdict["rules"] = checks
        verdict["passed"] = all(check["passed"] for check in checks)
        failed = [check["reason"] for check in checks if not check["passed"]]
        verdict["reason"] = "all rules pass" if not failed else "; ".join(failed)
    if record:
        workspace.metadata.registry.add_verdict(
            GateRecord(
                name,
                cand.version,
                against,
                champion_version,
                bool(verdict["passed"]),
                verdict["time"],
                _user(),
                json.loads(json.dumps(verdict, default=str)),
            )
        )
    return verdict


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(verdict: dict[str, Any]) -> str:
    """The verdict as Markdown for a pull-request comment."""
    mark = "✅ passed" if verdict["passed"] else "❌ failed"
    against = verdict["against"]
    champion = f"version {against['version']}" if against["version"] is not None else "no model yet"
    lines = [
        f"### molen gate: {verdict['model']} version {verdict['candidate']['version']} {mark}",
        "",
        f"Against `{verdict['model']}@{against['alias']}` ({champion}); "
        + (
            f"scored on `{verdict['data']['path']}` ({verdict['data']['rows']} rows)."
            if verdict["mode"] == "holdout"
            else "recorded run metrics."
        ),
        "",
        "| metric | better | candidate | champion | change | rule | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for check in verdict["rules"]:
        rule = []
        if check.get("min_delta") is not None:
            rule.append(f"Δ ≥ {check['min_delta']:g}")
        if check.get("max_relative_drop") is not None:
            rule.append(f"drop ≤ {check['max_relative_drop']:.1%}")
        if check.get("threshold") is not None:
            rule.append(("≥ " if check["direction"] == "higher" else "≤ ") + f"{check['threshold']:g}")
        lines.append(
            f"| {check['metric']} | {check['direction']} | {_value(check['candidate'])} | "
            f"{_value(check['champion'])} | {_value(check.get('delta'))} | {', '.join(rule) or '—'} | "
            f"{'pass' if check['passed'] else 'FAIL: ' + check['reason']} |"
        )
    lines += ["", verdict["reason"], ""]
    return "\n".join(lines)


def promote(
    name: str,
    version: int,
    *,
    to: str,
    gate: bool = False,
    data: str | Path | None = None,
    target: str | None = None,
    rules: list[GateRule] | None = None,
    workspace: Workspace | None = None,
) -> tuple[dict[str, Any] | None, Any]:
    """Move ``name@to`` to ``version``; with ``gate``, only if the gate passes against the
    version ``to`` holds now. Returns (the verdict or None, the alias move or None)."""
    from molen.registry.service import set_alias

    workspace = workspace or open_workspace()
    verdict = None
    if gate:
        verdict = run_gate(
            name,
            candidate=str(version),
            against=to,
            data=data,
            target=target,
            rules=rules,
            workspace=workspace,
        )
        if not verdict["passed"]:
            return verdict, None
    return verdict, set_alias(name, version, to, workspace=workspace)
