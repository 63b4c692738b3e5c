"""The JSON layout of the golden vectors (shared by the make_*_vectors.py builders): dicts one key
per line, lists of scalars on one line, floats as Python's repr (which round-trips exactly)."""

import json
import math
import pathlib
from typing import Any, Callable, Optional, Sequence


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


def write_vectors(out_dir: pathlib.Path, cases: Sequence[Any], run_case: Callable[[Any], dict],
                  max_bytes: Optional[int] = None) -> int:
    """Write one file per case (``case.name``), delete files of cases that no longer exist, and
    print a one-line summary; the builders' ``main``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {case.name for case in cases}
    assert len(names) == len(cases), "duplicate case names"
    for stale in out_dir.glob("*.json"):
        if stale.stem not in names:
            stale.unlink()
    total = 0
    for case in cases:
        text = file_text(run_case(case))
        assert max_bytes is None or len(text) < max_bytes, (case.name, f"{len(text)} bytes")
        (out_dir / f"{case.name}.json").write_text(text)
        total += len(text)
    print(f"wrote {len(cases)} vectors to {out_dir} ({total / 1024:.0f} kB)")
    return 0
