"""The deployment format: pruned weights as compressed sparse columns, read without PyTorch.

An export is a directory with two files::

    model.json         header: format, version, architecture, every tensor's shape, vocabulary
    model.safetensors  the tensors (numpy dtypes, no PyTorch needed to read them)

Each weight matrix of an event-driven product (``Architecture.sparse_products``: every
product of ``architecture`` but the decoder, e.g. ``layer{l}.W_ih``, EGRU ``layer{l}.U_ur``
and ``layer{l}.U_z``, ``projection``) is stored as compressed sparse columns, because an
event (a nonzero input j) needs exactly column j:

    {name}.values       float32 [nnz]      the stored nonzeros, column by column
    {name}.row_indices  uint16 [nnz]       their rows, increasing within a column
                        (int32 when the matrix has more than 65,536 rows)
    {name}.col_ptr      int64 [cols + 1]   column j is values[col_ptr[j]:col_ptr[j+1]]

Dense tensors (``Architecture.dense_tensors``): ``embedding`` [V, E] (also the decoder
when tied), ``decoder.weight`` [V, H_last] only when not tied (then there is no
projection), ``decoder.bias`` [V]; per layer the cell's vectors (EGRU ``layer{l}.bias``
[3H] and ``layer{l}.threshold`` [H], reset-after also ``layer{l}.bias_hz`` [H]; LSTM/GRU
``layer{l}.bias_ih`` and ``layer{l}.bias_hh``).

The EGRU options that change what the engine computes are in the header:
``reset_after`` (the candidate tanh(W_z x + b_z + r ⊙ (U_z y + b_hz))),
``carry_local_state`` and ``window`` (false: c restarts at 0 every ``window`` tokens,
``evaluation.DEFAULT_BPTT``, as in the model's windows). A file that uses either option
is version 2, so that a dualsparse from before them refuses it instead of computing
another cell; every other file is version 1, as before. A header without the keys
(every file written before them) reads as reset_after false, c carried.

The in-memory types (``CSCMatrix``, ``ExportedModel``) are in ``engine.format``.

``load_export`` checks every name, dtype, shape and index range before the engine
sees a single number, so a damaged or hand-edited file fails with one line that
says what is wrong instead of reading out of bounds inside a compiled kernel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dualsparse.architecture import CELLS, Architecture
from dualsparse.engine.format import (
    CSCMatrix,
    ExportedModel,
    csc_from_dense,
    index_dtype,
    weight_sparsity,
)
from dualsparse.errors import DualsparseError
from dualsparse.fileio import atomic_write_bytes, atomic_write_text

# weight_sparsity is defined in engine.format; the CLI reads it from here, beside load_export
__all__ = [
    "FORMAT",
    "VERSION",
    "HEADER_FILE",
    "TENSOR_FILE",
    "export_model",
    "export_run",
    "load_export",
    "weight_sparsity",
]

FORMAT = "dualsparse-engine"
VERSION = 2  # the newest version written; 1 for files without the EGRU options
READABLE_VERSIONS = (1, 2)
HEADER_FILE = "model.json"
TENSOR_FILE = "model.safetensors"
FIX = "export the run again with `dualsparse export RUN OUT_DIR`"


# --- writing (needs PyTorch: it reads a trained LanguageModel) -----------------------------


def export_model(
    model, itos: list[str], out_dir: str | Path, source: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (a ``LanguageModel`` in eval mode) and its vocabulary to ``out_dir``."""
    from safetensors.numpy import save

    from dualsparse.evaluation import DEFAULT_BPTT

    arch = Architecture.of(model)
    carry = arch.model_type != "egru" or bool(getattr(model.cfg, "carry_local_state", True))
    version = 1 if carry and not arch.reset_after else VERSION
    params = {n: p.detach().cpu().float().numpy() for n, p in model.named_parameters()}
    tensors = {name: params[param] for name, (param, _) in arch.dense_tensors().items()}
    header_matrices = {}
    for product in arch.sparse_products():
        name, start = product.name, product.row_start
        csc = csc_from_dense(params[product.weight][start : start + product.rows])
        tensors[f"{name}.values"] = csc.values
        tensors[f"{name}.row_indices"] = csc.row_indices
        tensors[f"{name}.col_ptr"] = csc.col_ptr
        header_matrices[name] = {
            "shape": [csc.rows, csc.cols],
            "nnz": csc.nnz,
            "index_dtype": str(csc.row_indices.dtype),
        }
    header = {
        "format": FORMAT,
        "version": version,
        "model_type": arch.model_type,
        "emb_size": arch.emb_size,
        "hidden_sizes": list(arch.hidden_sizes),
        "vocab_size": arch.vocab_size,
        "tied": arch.tied,
        "projection": arch.projection,
        "reset_after": arch.reset_after,
        "carry_local_state": carry,
        "window": DEFAULT_BPTT,
        "matrices": header_matrices,
        "dense": {
            n: list(t.shape)
            for n, t in tensors.items()
            if not n.endswith((".values", ".row_indices", ".col_ptr"))
        },
        "source": source or {},
        "itos": list(itos),
    }
    data = save(
        {n: np.ascontiguousarray(t) for n, t in tensors.items()},
        metadata={"format": FORMAT, "version": str(version)},
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / TENSOR_FILE, lambda handle: handle.write(data))
    atomic_write_text(out_dir / HEADER_FILE, json.dumps(header, ensure_ascii=False) + "\n")
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Export a trained (possibly pruned) run's checkpoint for the engine."""
    from dualsparse.runs import load_run

    run = load_run(run_dir, checkpoint)
    return export_model(
        run.model,
        run.vocab.itos,
        out_dir,
        source={"run": str(run_dir), "checkpoint": str(run.checkpoint)},
    )


# --- reading and validation (numpy only) ---------------------------------------------------


def _bad(path: Path, what: str) -> DualsparseError:
    return DualsparseError(f"{path}: {what}; {FIX}")


def _read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DualsparseError(
            f"{path} is missing; give a directory written by `dualsparse export`"
        ) from None
    except (OSError, ValueError) as exc:
        raise _bad(path, f"is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, f"is not a {FORMAT} header")
    if header.get("version") not in READABLE_VERSIONS:
        raise _bad(
            path,
            f"has format version {header.get('version')!r}, this dualsparse "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}",
        )
    model_type = header.get("model_type")
    if model_type not in CELLS:
        raise _bad(path, f"model_type {model_type!r} is not one of {', '.join(CELLS)}")

    def positive(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    sizes = header.get("hidden_sizes")
    if not (
        positive(header.get("emb_size"))
        and positive(header.get("vocab_size"))
        and isinstance(sizes, list)
        and sizes
        and all(positive(s) for s in sizes)
    ):
        raise _bad(path, "emb_size, vocab_size and hidden_sizes must be positive integers")
    for key in ("tied", "projection"):
        if not isinstance(header.get(key), bool):
            raise _bad(path, f"'{key}' must be true or false")
    _read_egru_options(path, header)
    if header["projection"] != (header["tied"] and sizes[-1] != header["emb_size"]):
        raise _bad(
            path,
            "'projection' must be true exactly for a tied decoder whose "
            "emb_size differs from the last hidden size",
        )
    itos = header.get("itos")
    if not (
        isinstance(itos, list)
        and len(itos) == header["vocab_size"]
        and all(isinstance(w, str) and w.split() == [w] for w in itos)
        and len(set(itos)) == len(itos)
    ):
        raise _bad(path, f"'itos' must list {header['vocab_size']} distinct single words")
    return header


def _read_egru_options(path: Path, header: dict[str, Any]) -> None:
    """``reset_after``, ``carry_local_state`` and ``window``, absent in files written before
    them (read as false, true: the cell they were written for)."""
    for key, default in (("reset_after", False), ("carry_local_state", True)):
        header.setdefault(key, default)
        if not isinstance(header[key], bool):
            raise _bad(path, f"'{key}' must be true or false")
        if header[key] != default and header["model_type"] != "egru":
            raise _bad(path, f"'{key}': {json.dumps(header[key])} is an EGRU option")
    window = header.get("window")
    if not header["carry_local_state"] and not (
        isinstance(window, int) and not isinstance(window, bool) and window > 0
    ):
        raise _bad(path, "'window' must be a positive integer when c is not carried")


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise DualsparseError(f"{path} is missing; {FIX}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _bad(path, f"is truncated or corrupted ({reason})") from None


def _take(
    tensors: dict[str, np.ndarray],
    path: Path,
    name: str,
    shape: tuple[int, ...],
    dtypes: tuple[type, ...],
) -> np.ndarray:
    if name not in tensors:
        raise _bad(path, f"tensor {name} is missing")
    array = tensors[name]
    if array.dtype not in [np.dtype(d) for d in dtypes]:
        raise _bad(
            path,
            f"tensor {name} has dtype {array.dtype}, expected "
            f"{' or '.join(np.dtype(d).name for d in dtypes)}",
        )
    if tuple(array.shape) != tuple(shape):
        raise _bad(path, f"tensor {name} has shape {list(array.shape)}, expected {list(shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _bad(path, f"tensor {name} holds NaN or infinite values")
    return np.ascontiguousarray(array)


def _take_csc(
    tensors: dict[str, np.ndarray], path: Path, name: str, shape: tuple[int, int]
) -> CSCMatrix:
    rows, cols = shape
    col_ptr = _take(tensors, path, f"{name}.col_ptr", (cols + 1,), (np.int64,))
    if col_ptr[0] != 0 or (np.diff(col_ptr) < 0).any():
        raise _bad(path, f"{name}.col_ptr must start at 0 and never decrease")
    nnz = int(col_ptr[-1])
    if nnz > rows * cols:
        raise _bad(path, f"{name} claims {nnz} nonzeros in a {rows}x{cols} matrix")
    values = _take(tensors, path, f"{name}.values", (nnz,), (np.float32,))
    row_indices = _take(tensors, path, f"{name}.row_indices", (nnz,), (index_dtype(rows),))
    if nnz and int(row_indices.max()) >= rows:
        raise _bad(
            path, f"{name}.row_indices has row {int(row_indices.max())} outside 0..{rows - 1}"
        )
    # rows strictly increase inside each column: no duplicates, cache-friendly order
    steps = np.diff(row_indices.astype(np.int64))
    new_column = np.zeros(max(nnz - 1, 0), dtype=bool)
    starts = col_ptr[1:-1]
    new_column[starts[(starts > 0) & (starts < nnz)] - 1] = True
    if (steps[~new_column] <= 0).any():
        raise _bad(path, f"{name}.row_indices must increase strictly within each column")
    return CSCMatrix(rows, cols, values, row_indices, col_ptr)


def load_export(directory: str | Path) -> ExportedModel:
    """Read and validate an export directory (see the module docstring for the layout)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DualsparseError(
            f"model directory {directory} does not exist; write one with "
            "`dualsparse export RUN OUT_DIR`"
        )
    header_path, tensor_path = directory / HEADER_FILE, directory / TENSOR_FILE
    header = _read_header(header_path)
    tensors = _read_tensors(tensor_path)
    model_type, emb, sizes = header["model_type"], header["emb_size"], header["hidden_sizes"]
    reset_after = header["reset_after"]
    arch = Architecture(model_type, emb, sizes, header["vocab_size"], header["tied"], reset_after)
    shapes = {p.name: (p.rows, p.cols) for p in arch.sparse_products()}
    declared = header.get("matrices")
    if not isinstance(declared, dict) or set(declared) != set(shapes):
        raise _bad(header_path, f"'matrices' must describe exactly {', '.join(shapes)}")
    for name, shape in shapes.items():
        if not isinstance(declared[name], dict) or declared[name].get("shape") != list(shape):
            raise _bad(
                header_path, f"matrix {name} must have shape {list(shape)} for this architecture"
            )
    matrices = {
        name: _take_csc(tensors, tensor_path, name, shape) for name, shape in shapes.items()
    }
    for name, matrix in matrices.items():
        if declared[name].get("nnz") != matrix.nnz:
            raise _bad(
                header_path,
                f"matrix {name} declares {declared[name].get('nnz')} nonzeros but "
                f"{TENSOR_FILE} holds {matrix.nnz}",
            )
    dense = {
        name: _take(tensors, tensor_path, name, shape, (np.float32,))
        for name, (_, shape) in arch.dense_tensors().items()
    }
    expected = set(dense) | {
        f"{m}.{part}" for m in matrices for part in ("values", "row_indices", "col_ptr")
    }
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise _bad(tensor_path, f"holds tensors this format does not define ({unexpected[:3]})")
    return ExportedModel(
        model_type,
        emb,
        list(sizes),
        header["vocab_size"],
        header["tied"],
        header["projection"],
        list(header["itos"]),
        matrices,
        dense,
        header,
        reset_after,
        None if header["carry_local_state"] else header["window"],
    )
