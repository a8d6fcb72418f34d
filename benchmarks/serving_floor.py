"""The floor of the serving benchmark: a bare FastAPI endpoint that parses JSON and predicts.

Run by ``bench_serving.py`` under molen's python, with uvicorn's settings as ``molen serve``
uses them (one worker, uvloop and httptools when installed, log level warning, no access log)::

    python benchmarks/serving_floor.py --model PKL --port PORT [--host 127.0.0.1]

``PKL`` is the pickle ``{"model": fitted estimator, "example": DataFrame}`` that
``bench_serving.py`` writes (the MLflow peer saves the same one). Routes: ``POST /predict``
takes a JSON list of row objects and answers the JSON list of ``model.predict`` (orjson parse
-> ``pandas.DataFrame`` -> ``predict`` -> orjson), the least any Python model server does per
request; ``GET /health``. Nothing is checked, counted or logged.
"""

from __future__ import annotations

import argparse
import os
import pickle

import orjson
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

ENV = "MOLEN_BENCH_FLOOR_MODEL"


def create_app(path: str) -> FastAPI:
    with open(path, "rb") as handle:
        model = pickle.load(handle)["model"]
    app = FastAPI(title="floor")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        rows = orjson.loads(await request.body())
        predictions = model.predict(pd.DataFrame(rows))
        return Response(orjson.dumps(predictions.tolist()), media_type="application/json")

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def app_from_environment() -> FastAPI:
    return create_app(os.environ[ENV])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bare FastAPI + model.predict (the serving floor).")
    parser.add_argument("--model", required=True, help='pickle of {"model": ..., "example": ...}')
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvicorn

    os.environ[ENV] = args.model
    uvicorn.run(
        "serving_floor:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
