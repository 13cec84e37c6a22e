"""Hidden checks: the student's code runs in the kernel, the answer key stays with the grader.

A hidden test written as ``assert torch.allclose(loss, expected)`` brings the expected value into
the student's kernel, where it can be read, and trusts ``assert`` and ``torch.allclose``, which a
notebook can redefine. A hidden check instead only *reports* what the student's code produced,
from inside a test cell's hidden-tests region (between nbgrader's begin and end marker comments,
not spelt out here: this file ships to students, and the student copy refuses those markers)::

    from gankit.checks import hidden_check
    real = torch.tensor([120.0, -80.0, 7.0])
    hidden_check("extreme logits", loss=discriminator_loss(real, -real))

The outputs leave the kernel as data (a display output of type :data:`MIME`). Outside the kernel,
the grader (``grading/checks.py``) compares them with what the instructor's solution reported for
the same check, the answer key, with the tolerance the instructor gave. A check whose outputs
differ, or that never reported, scores the test cell 0.

Only plain data can be reported: tensors and numpy arrays (any shape; float, int or bool), Python
numbers, strings, ``None``, and lists, tuples and string-keyed dicts of those. Report names of
types (``type(m).__name__``), shapes (``list(x.shape)``) and counts rather than objects.
"""
from __future__ import annotations

import base64
import json
import math

MIME = "application/vnd.gankit.check+json"
MAX_PAYLOAD_BYTES = 1 << 20   # a check is a few numbers, not a dataset
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64")


class CheckError(TypeError):
    """A hidden check was asked to report something that is not plain data."""


def encode(value, where: str = "output"):
    """``value`` as JSON-ready data; arrays become ``{"__array__": {dtype, shape, data (base64)}}``."""
    import numpy as np

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if _is_tensor(value):
        tensor = value.detach().cpu()
        if tensor.is_complex():
            raise CheckError(f"{where}: complex tensors cannot be reported; send .real and .imag")
        if str(tensor.dtype) in ("torch.bfloat16",):
            tensor = tensor.float()
        value = tensor.numpy()
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            raise CheckError(f"{where}: arrays of dtype {value.dtype} cannot be reported ({', '.join(DTYPES)})")
        array = value.astype(value.dtype.newbyteorder("<"), order="C")  # keeps 0-d shapes, unlike ascontiguousarray
        return {"__array__": {"dtype": value.dtype.name, "shape": list(value.shape),
                              "data": base64.b64encode(array.tobytes()).decode("ascii")}}
    if isinstance(value, (list, tuple)):   # torch.Size is a tuple of ints
        return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise CheckError(f"{where}: only dicts with string keys can be reported")
        return {"__dict__": {key: encode(item, f"{where}[{key!r}]") for key, item in value.items()}}
    raise CheckError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}: report tensors, "
                     "arrays, numbers, strings or lists/dicts of them (e.g. type(m).__name__, list(x.shape))")


def _is_tensor(value) -> bool:
    module = type(value).__module__
    return module.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy")


def hidden_check(name: str, *, rtol: float = 1e-5, atol: float = 1e-6, **outputs) -> None:
    """Report the student's ``outputs`` of the check ``name`` to the grader.

    ``rtol``/``atol`` are the tolerance for floating-point outputs; the grader takes them from the
    answer key (the instructor's run), never from the student's. Names must be unique in a cell.
    """
    if not outputs:
        raise CheckError(f"hidden_check({name!r}) reports nothing: pass the outputs as keywords")
    payload = {"name": str(name), "rtol": float(rtol), "atol": float(atol),
               "outputs": {key: encode(value, key) for key, value in outputs.items()}}
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise CheckError(f"hidden_check({name!r}) reports more than {MAX_PAYLOAD_BYTES >> 20} MiB: "
                         "report a few numbers (a sum, a slice, a shape), not whole tensors")
    from IPython.display import display

    display({MIME: payload, "text/plain": f"hidden check {name!r}: reported to the grader"}, raw=True)
