"""The JSON layout of the golden vectors (shared by the make_*_vectors.py builders): dicts one key
per line, lists of scalars on one line, floats as Python's repr (which round-trips exactly)."""

import json
import math
from typing import Any


def _scalar_list(v: Any) -> bool:
    return isinstance(v, list) and all(not isinstance(e, (list, dict)) for e in v)


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON text of ``obj``; non-finite floats raise a ValueError."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {dumps(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and not _scalar_list(obj):
        items = [pad + " " + dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    for v in obj if isinstance(obj, list) else [obj]:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("non-finite value in a golden vector")
    return json.dumps(obj, allow_nan=False)


def file_text(record: dict) -> str:
    """The file content of one vector."""
    return dumps(record) + "\n"
