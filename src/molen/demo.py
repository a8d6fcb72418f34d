"""molen's main job, as a short demo: versioned data, tracked runs, models, a pipeline, experiments.

Run it with ``bash scripts/demo.sh`` (or ``molen demo``). It trains a tiny logistic regression
in pure Python three times with different learning rates, records every run (params, a loss
curve, metrics, the data version, the git commit) and logs each model to the registry, lists
and compares the runs with the same commands a user types, promotes the best model through the
quality gate and shows its lineage, then declares the training as a pipeline stage, reproduces it (twice:
the second time nothing runs) and sweeps its params as experiments. The project is left
behind for exploring.
"""

from __future__ import annotations

import csv
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]


def _make_data(path: Path, rows: int = 400, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tenure", "charges", "calls", "churned"])
        for _ in range(rows):
            tenure, charges, calls = rng.uniform(0, 6), rng.uniform(0, 5), rng.randint(0, 8)
            score = -1.2 * tenure + 0.9 * charges + 0.5 * calls - 1.0 + rng.gauss(0, 1)
            writer.writerow([f"{tenure:.3f}", f"{charges:.3f}", calls, int(score > 0)])


def _load(path: Path) -> tuple[list[list[float]], list[int]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    features = [[float(r["tenure"]), float(r["charges"]), float(r["calls"])] for r in rows]
    return features, [int(r["churned"]) for r in rows]


def _auc(scores: list[float], labels: list[int]) -> float:
    ranked = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum = sum(index + 1 for index, (_, label) in enumerate(ranked) if label == 1)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


FEATURES = ("tenure", "charges", "calls")


class DemoModel:
    """The demo's trained logistic regression, as any model with ``predict`` (molen's generic
    flavor): it scores rows with the columns tenure, charges and calls."""

    classes_ = (0, 1)

    def __init__(self, weights: list[float], bias: float) -> None:
        self.weights = weights
        self.bias = bias

    def predict_proba(self, frame: Any) -> Any:
        import numpy as np

        scores = frame[list(FEATURES)].to_numpy(dtype=float) @ np.asarray(self.weights) + self.bias
        positive = 1 / (1 + np.exp(-scores))
        return np.column_stack([1 - positive, positive])

    def predict(self, frame: Any) -> Any:
        return (self.predict_proba(frame)[:, 1] > 0.5).astype(int)


def _train(
    features: list[list[float]], labels: list[int], lr: float, epochs: int
) -> tuple[dict[str, float], DemoModel]:
    import molen

    weights, bias = [0.0] * len(features[0]), 0.0
    split = int(len(features) * 0.75)
    train_x, train_y, test_x, test_y = features[:split], labels[:split], features[split:], labels[split:]
    for epoch in range(epochs):
        loss = 0.0
        gradient, gradient_bias = [0.0] * len(weights), 0.0
        for x, y in zip(train_x, train_y, strict=True):
            p = 1 / (1 + math.exp(-(sum(w * v for w, v in zip(weights, x, strict=True)) + bias)))
            loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
            for i, v in enumerate(x):
                gradient[i] += (p - y) * v
            gradient_bias += p - y
        weights = [w - lr * g / len(train_x) for w, g in zip(weights, gradient, strict=True)]
        bias -= lr * gradient_bias / len(train_x)
        molen.log_metric("train_loss", loss / len(train_x), step=epoch)
    scores = [sum(w * v for w, v in zip(weights, x, strict=True)) + bias for x in test_x]
    accuracy = sum((s > 0) == bool(y) for s, y in zip(scores, test_y, strict=True)) / len(test_y)
    return {"auc": _auc(scores, test_y), "accuracy": accuracy}, DemoModel(weights, bias)


def _say(text: str) -> None:
    from molen.cli.render import console

    console().print(f"\n[bold cyan]▶ {text}[/]")


def _molen(*args: str, allowed: tuple[int, ...] = (0,)) -> None:
    from molen.cli.render import console

    console().print(f"[dim]$ molen {' '.join(args)}[/]")
    from molen.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        if (exc.code or 0) not in allowed:
            raise


def run_demo(where: Path | None = None) -> Path:
    """Create a demo project, record three runs, list and compare them; return the project."""
    import molen
    from molen.project import init_project

    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="molen-demo-")) / "churn"
    _say(f"A fresh project in {root}")
    project = init_project(root, experiment="churn")
    os.chdir(project.root)
    data = project.root / "data.csv"
    _make_data(data)
    (project.root / ".gitignore").write_text(".molen/\n")
    _say("Version the data: a pointer for git, the bytes in the cache")
    _molen("data", "add", "data.csv")
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "molen demo"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "demo@molen.invalid"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "molen demo"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "demo@molen.invalid"),
    }
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "demo project"]):
        subprocess.run(command, cwd=project.root, env=git_env, check=False, capture_output=True)

    import pandas as pd

    features, labels = _load(data)
    reference = pd.DataFrame(features, columns=list(FEATURES)).astype({"calls": int})
    _say(
        "Training three variants; every run is recorded (params, loss curve, metrics, data, commit) "
        "and its model logged with a signature, reference profile and card, as churn/1, /2, /3"
    )
    ids = []
    aucs = []
    for lr, epochs in ((0.05, 30), (0.3, 30), (1.0, 60)):
        with molen.start_run(name=f"lr-{lr}", tags={"model": "logistic"}) as run:
            run.log_params({"lr": lr, "epochs": epochs})
            run.log_input(data)
            metrics, model = _train(features, labels, lr, epochs)
            run.log_metrics(metrics)
            run.log_dict({"lr": lr, "epochs": epochs, **metrics}, "summary.json")
            logged = run.log_model(
                model,
                "churn",
                reference=reference,
                y_reference=labels,
                description="Which customers leave (demo)",
            )
            ids.append(run.id)
            aucs.append(metrics["auc"])
        print(f"  run {run.id[:8]}  lr={lr:<5} epochs={epochs:<3} auc={metrics['auc']:.3f}  → {logged.uri}")

    _say("The runs, best AUC first")
    _molen("runs", "list", "--sort", "-metrics.auc")
    _say("Only the good ones, with the filter language")
    _molen("runs", "list", "--filter", "metrics.auc > 0.8 and params.epochs = '30'")
    _say("Side by side: what differs, and which run is best at each metric")
    _molen("runs", "compare", *(run_id[:8] for run_id in ids))

    worst = 1 + min(range(3), key=lambda i: aucs[i])
    best = 1 + max(range(3), key=lambda i: aucs[i])
    _say(f"The registry: churn/{worst} goes to production, then churn/{best} must beat it through the gate")
    _molen("models", "alias", "churn", str(worst), "production")
    _molen("gate", "churn", "--candidate", str(best), "--against", "production", allowed=(0, 1))
    _molen("models", "promote", "churn", str(best), "--to", "production", "--gate", allowed=(0, 1))
    _molen("models", "list")
    _say("Where the production model came from, and where the data went")
    _molen("lineage", "churn@production")
    _molen("lineage", "data.csv.molen")
    production = molen.load_model("churn@production")
    row = {"tenure": 0.5, "charges": 4.0, "calls": 6}
    probabilities = production.predict_proba([row])[0]
    print(f"  molen.load_model('churn@production').predict_proba([{row}]) = {probabilities}")

    _say("The same training as a pipeline stage: it reruns only when data.csv or its params change")
    (project.root / "params.yaml").write_text("lr: 0.3\nepochs: 30\n")
    with open(project.config_path, "a") as config:
        config.write(
            "stages:\n"
            "  train:\n"
            f"    cmd: {sys.executable} -m molen.demo --train-stage\n"
            "    deps: [data.csv]\n"
            "    params: [lr, epochs]\n"
            "    outs: [model.json]\n"
            "    metrics: [metrics.json]\n"
        )
    _molen("repro")
    _molen("repro")
    _say("Experiments: every combination in a working copy, the workspace untouched")
    _molen("exp", "run", "--grid", "lr=0.1,1.0", "--grid", "epochs=20,40", "-j", "2")
    _molen("exp", "show", "--sort", "-metrics.auc", "--only-changed")
    _say("Done")
    print(f"  The project is left in {project.root}; try, from there:")
    print(f"    molen runs show {ids[-1][:8]}")
    print("    molen runs list --format json")
    print("    molen data log data.csv      # the data version, and the runs that used it")
    print("    molen models show churn@production --card;  molen models diff churn 1 3")
    print("    molen dag; molen status; molen exp apply RUN")
    print(f"  (`{sys.executable} -m molen` works too, if `molen` is not on your PATH.)")
    return project.root


def train_stage() -> None:
    """The demo pipeline's stage: train with params.yaml's lr and epochs on data.csv, log into
    the pipeline's run (``molen.start_run()`` attaches to it), write model.json and metrics.json."""
    import json

    import yaml

    import molen

    params = yaml.safe_load(Path("params.yaml").read_text())
    features, labels = _load(Path("data.csv"))
    with molen.start_run():
        metrics, _ = _train(features, labels, float(params["lr"]), int(params["epochs"]))
    Path("model.json").write_text(json.dumps({"lr": params["lr"], "epochs": params["epochs"]}))
    Path("metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    if sys.argv[1:] == ["--train-stage"]:
        train_stage()
    else:
        run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
