"""The recommender's file format and registry glue: one memory-mapped file, a native format.

The native format ``recommender`` is one file, ``model.shipyard-rec``: a 16-byte magic, the
length of a JSON manifest (8 bytes, little-endian), the manifest (parameters; each array's
name, dtype, shape and offset), then the arrays, each 64-byte aligned. Saving writes the
arrays one after the other (a memory-mapped table is never copied whole); loading maps the
file (after the registry verified its SHA-256) so a 10M-user table is paged in as requests
touch it. The ANN index and the ranker are byte arrays in the same file. No MLflow flavour
of its own is needed, nor a copy of a multi-GB file: the registry logs a generic pyfunc
model holding a pointer to the registered file (relative path and SHA-256,
``mlflow_by_reference``), so ``mlflow.pyfunc.load_model(uri).predict(frame)`` answers the
same dicts (without session state, which only ``shipyard serve`` keeps).

:class:`RecommenderConfig` wraps a :class:`~shipyard.training.recommend.Recommender` as a
registrable model (:meth:`RecommenderConfig.model`); :mod:`shipyard.training.recommend`
re-exports every public name here.

Example::

    save_recommender(rec, Path("out") / FILE)
    rec = load_recommender(Path("out") / FILE)  # after verifying the file's SHA-256
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, cast

import numpy as np

from shipyard.errors import IntegrityError, TrainingError, invalid_parameter
from shipyard.integrity import write_atomically_with
from shipyard.training.trainers import ModelConfig, NativeFormat, TrainedModel, register_format
from shipyard.types import ColumnSpec, Schema

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from shipyard.training.recommend import Recommender

FRAMEWORK = "recommender"
FILE = "model.shipyard-rec"
MAGIC = b"SHIPYARD-REC/v1\n"
ALIGN = 64
INPUTS = Schema(
    (
        ColumnSpec("user", "string"),
        ColumnSpec("session", "string", nullable=True),
        ColumnSpec("k", "string", nullable=True),
        ColumnSpec("exclude_seen", "string", nullable=True),
        ColumnSpec("genre", "string", nullable=True),
    )
)
"""The served input: user id; session item ids (spaces or commas; may be empty); k (empty:
10); exclude_seen (true/false; empty: true); genre (empty: none; ``A|B``: either)."""
RECOMMENDATIONS = Schema((ColumnSpec("recommendations", "string"),))
"""The served output: one JSON value per row (module doc)."""
_CHUNK = 64 << 20  # bytes per write when saving
SEPARATORS = re.compile(r"[\s,]+")
"""What separates item ids in a ``session`` value (and what no id may contain)."""

# -- ids and strings over (memory-mapped) arrays ----------------------------------------------


class Ids:
    """External ids (str) of dense indexes, looked up by binary search over sorted arrays.

    Three arrays, all of which may be memory-mapped: ``ids`` (bytes, dense order),
    ``sorted_ids`` and ``order`` (``sorted_ids[i] == ids[order[i]]``): a lookup touches
    log2(n) pages, never the whole table.
    """

    def __init__(self, ids: NDArray[Any], sorted_ids: NDArray[Any], order: NDArray[Any]) -> None:
        self.ids, self.sorted_ids, self.order = ids, sorted_ids, order

    @classmethod
    def of(cls, values: Sequence[str] | NDArray[Any], what: str) -> Ids:
        """The ids of ``values`` (unique, non-empty, no spaces or commas); an integer array
        (10M users, say) is converted without a Python string per id."""
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
            ids = values.astype("S")
        else:
            encoded = [str(v).encode() for v in values]
            bad = [v for v in encoded if not v or SEPARATORS.search(v.decode())]
            if bad:
                raise invalid_parameter(what, "Recommender", "ids without spaces or commas", bad[0])
            ids = np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}")
        order = np.argsort(ids, kind="stable").astype(np.int64)
        ordered = ids[order]
        if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
            twice = ordered[1:][ordered[1:] == ordered[:-1]][0].decode()
            raise invalid_parameter(what, "Recommender", "unique ids", f"{twice!r} twice")
        return cls(ids, ordered, order)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, values: Sequence[str]) -> NDArray[np.int64]:
        """The dense index of each value; -1 where it is not an id here."""
        found = np.full(len(values), -1, dtype=np.int64)
        if not len(values) or not len(self):
            return found
        width = self.sorted_ids.dtype.itemsize
        encoded = [v.encode() for v in values]
        # numpy's bytes drop trailing NULs: "318\0" must not find "318"
        fits = np.array([0 < len(v) <= width and not v.endswith(b"\0") for v in encoded])
        query = np.array(encoded, dtype=self.sorted_ids.dtype)
        where = np.minimum(np.searchsorted(self.sorted_ids, query), len(self) - 1)
        hit = fits & (np.asarray(self.sorted_ids[where]) == query)
        found[hit] = np.asarray(self.order[where[hit]])
        return found

    def external(self, dense: NDArray[np.int64]) -> list[str]:
        """The external ids of dense indexes."""
        return [v.decode() for v in np.asarray(self.ids[dense]).tolist()]


def pack_strings(values: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """``values`` as (offsets [n + 1], UTF-8 bytes): string ``i`` is ``bytes[offsets[i]:
    offsets[i + 1]]`` (how titles are stored)."""
    blobs = [v.encode() for v in values]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()


# -- the file ---------------------------------------------------------------------------------

MANIFEST_FORMAT = "shipyard.recommender/1"
_DTYPE_KINDS = "biufS"  # never object arrays: a manifest cannot make numpy unpickle


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def save_recommender(recommender: Recommender, path: Path) -> None:
    """Write ``recommender`` to one file (module doc), atomically, one array after another."""
    arrays = dict(recommender.arrays)
    extra: dict[str, Any] = {"index": None, "ranker": None}
    if recommender.index is not None:
        arrays["index_bytes"] = np.frombuffer(recommender.index.to_bytes(), dtype=np.uint8)
        extra["index"] = {"kind": recommender.index.kind}
    if recommender.ranker is not None:
        arrays["ranker_bytes"] = np.frombuffer(recommender.ranker.to_bytes(), dtype=np.uint8)
        extra["ranker"] = {"kind": recommender.ranker.kind}
    entries: list[dict[str, Any]] = []
    offset = 0
    for name, array in arrays.items():
        entries.append(
            {"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        )
        offset = _aligned(offset + array.nbytes)
    manifest = {
        "format": MANIFEST_FORMAT,
        "params": recommender.params(),
        **extra,
        "arrays": entries,
    }
    header = json.dumps(manifest, sort_keys=True).encode()
    start = _aligned(len(MAGIC) + 8 + len(header))

    def write(fh: BinaryIO) -> None:
        fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
        for entry, array in zip(entries, arrays.values(), strict=True):
            fh.write(b"\0" * (start + entry["offset"] - fh.tell()))
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            for i in range(0, len(flat), _CHUNK):  # a mapped table is paged, not copied
                fh.write(flat[i : i + _CHUNK].data)

    write_atomically_with(path, write)


def load_recommender(path: Path, *, threads: int = 1) -> Recommender:
    """Map a file :func:`save_recommender` wrote (call only after verifying its SHA-256)."""
    with path.open("rb") as fh:
        head = fh.read(len(MAGIC) + 8)
        if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
            raise IntegrityError(f"{path} is not a Shipyard recommender file (no {MAGIC!r}).")
        (length,) = struct.unpack("<Q", head[len(MAGIC) :])
        manifest = json.loads(fh.read(length))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"{path}: format {manifest.get('format')!r}, not {MANIFEST_FORMAT!r}")
    start = _aligned(len(MAGIC) + 8 + length)
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    arrays: dict[str, NDArray[Any]] = {}
    for entry in manifest["arrays"]:
        dtype, shape = np.dtype(entry["dtype"]), tuple(int(d) for d in entry["shape"])
        begin = start + int(entry["offset"])
        end = begin + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or end > len(mapped):
            raise IntegrityError(f"{path}: array {entry['name']!r} is not readable ({entry}).")
        arrays[entry["name"]] = mapped[begin:end].view(dtype).reshape(shape)
    index = ranker = None
    if manifest["index"] is not None:
        from shipyard.training.ann import ItemIndex

        data = arrays.pop("index_bytes")  # faiss reads the mapped bytes: no copy in between
        index = ItemIndex.from_bytes(cast(bytes, data), manifest["index"]["kind"], threads=threads)
    if manifest["ranker"] is not None:
        from shipyard.training.recommend import load_ranker

        ranker = load_ranker(manifest["ranker"]["kind"], bytes(arrays.pop("ranker_bytes")))
    from shipyard.training.recommend import Recommender

    recommender = Recommender.__new__(Recommender)
    recommender._restore(arrays, manifest["params"], index, ranker)
    return recommender


class RecommenderFormat(NativeFormat):
    """The ``recommender`` native format: one memory-mapped file (module doc)."""

    file = FILE
    mlflow_by_reference: ClassVar[bool] = True
    """The registry logs a pointer to the file (relative path, SHA-256) to MLflow, not a copy."""

    def save(self, estimator: Any, path: Path) -> None:
        save_recommender(estimator, path)

    def load(self, path: Path) -> Any:
        return load_recommender(path)

    def predict(self, model: Any, batch: Any) -> Any:
        """A 1-D object array of answers (dicts), one per row of the [n, 5] str batch."""
        matrix = np.asarray(batch, dtype=object)
        columns = {name: matrix[:, j].tolist() for j, name in enumerate(INPUTS.names)}
        out = np.empty(len(matrix), dtype=object)
        for i, answer in enumerate(model.answer(model.parse(columns), now=time.time())):
            out[i] = answer
        return out


register_format(FRAMEWORK, RecommenderFormat())


class RecommenderConfig(ModelConfig):
    """How a recommender was built, as the registry records it; wrap one with :meth:`model`.

    Not fitted here (``shipyard.solutions.recsys.served.fit_recommender`` fits the factors),
    and not in ``MODEL_TYPES``: the trainer checks that run over every model type score
    tabular rows with probabilities.
    """

    model_type = "recommender"
    framework = FRAMEWORK
    defaults: ClassVar[dict[str, Any]] = {
        "factors": 64,
        "regularization": 0.05,
        "alpha": 10.0,
        "iterations": 15,
        "session_weight": 1.0,
        "session_length": 20,
        "session_ttl_s": 1800.0,
        "candidates": 200,
        "index": "hnsw",
        "ranker": "",
        "seed": 0,
    }

    def fit(self, X: Any, y: Any) -> TrainedModel:
        """Refused: fit with ``fit_recommender`` and wrap the result with :meth:`model`."""
        raise TrainingError(
            "RecommenderConfig does not fit from a feature frame; build a Recommender (e.g. "
            "shipyard.solutions.recsys.served.fit_recommender) and wrap it with .model(...)."
        )

    def model(self, recommender: Recommender) -> RecommenderModel:
        """``recommender`` as a registrable model (``ModelRegistry.register`` takes it)."""
        return RecommenderModel(self, recommender, INPUTS)


class RecommenderModel(TrainedModel):
    """A recommender as a registrable model: the five string columns in, JSON answers out."""

    output_schema: ClassVar[Schema] = RECOMMENDATIONS

    def predict_proba(self, X: Any) -> Any:
        """Not a classifier: each row's answer as a JSON string (what ``recommendations``
        holds); ``X`` a frame with the columns of :data:`INPUTS` (missing ones: empty)."""
        n = len(X)
        columns = {
            name: [str(v) for v in X[name]] if name in X.columns else [""] * n
            for name in INPUTS.names
        }
        found = self.estimator.answer(self.estimator.parse(columns), now=time.time())
        return np.asarray([json.dumps(r, ensure_ascii=False) for r in found], dtype=object)

    def feature_importance(self) -> dict[str, float]:
        """None: a factor model has no feature importance here."""
        return {}
