"""The field tables of ``spec/``: generate them from the config classes, and read them back.

Each config class ``C`` with ``spec_area = "A"`` has a block in ``spec/A.md``::

    <!-- fields: C -->
    | field | default | domain | unit | meaning |
    |---|---|---|---|---|
    | `name` | `default` | domain | unit | meaning |
    <!-- end fields -->

A block lists the fields that ``C`` declares or changes (default or domain) relative to its
config base class; inherited fields are documented once, in the base class's block. The
``default`` and ``domain`` columns are generated from the code; ``unit`` and ``meaning`` are
written by hand and kept when a block is regenerated::

    python -m refsim.configs.spec_tables spec/      # regenerate the mechanical columns
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .base import ConfigBase, describe_default, registry

HEADER = "| field | default | domain | unit | meaning |\n|---|---|---|---|---|"
_BLOCK = re.compile(r"<!-- fields: (\w+) -->\n(.*?)<!-- end fields -->", re.S)
_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|(.*)\|\s*$")


@dataclasses.dataclass
class Row:
    field: str
    default: str
    domain: str
    unit: str
    meaning: str


def _default_of(cls: type, f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        value = f.default
    return describe_default(value)


def _config_base(cls: type) -> Optional[type]:
    for base in cls.__mro__[1:]:
        if base is not ConfigBase and issubclass(base, ConfigBase) and dataclasses.is_dataclass(base):
            return base
    return None


def mechanical_rows(cls: type) -> List[Tuple[str, str, str]]:
    """(field, default, domain) of the fields ``cls`` declares or changes."""
    base = _config_base(cls)
    inherited = {}
    if base is not None:
        inherited = {
            f.name: (_default_of(base, f), f.metadata["domain"].describe())
            for f in dataclasses.fields(base)
        }
    rows = []
    for f in dataclasses.fields(cls):
        entry = (_default_of(cls, f), f.metadata["domain"].describe())
        if inherited.get(f.name) != entry:
            rows.append((f.name, *entry))
    return rows


def documented_classes() -> Dict[str, type]:
    """Every public config class (those with a spec area)."""
    return {
        name: cls
        for name, cls in registry().items()
        if cls.spec_area and not name.startswith("_")
    }


def parse_blocks(text: str) -> Dict[str, List[Row]]:
    """Class name -> rows of every field block in a spec file."""
    blocks: Dict[str, List[Row]] = {}
    for match in _BLOCK.finditer(text):
        rows = []
        for line in match.group(2).splitlines():
            m = _ROW.match(line.strip())
            if not m:
                continue
            cells = [c.strip() for c in m.group(2).split("|")]
            cells += [""] * (4 - len(cells))
            default = cells[0].strip("`")
            rows.append(Row(m.group(1), default, cells[1], cells[2], " | ".join(cells[3:]).strip()))
        blocks[match.group(1)] = rows
    return blocks


def render_block(cls: type, old: Optional[List[Row]] = None) -> str:
    keep = {row.field: row for row in (old or [])}
    lines = [f"<!-- fields: {cls.__name__} -->", HEADER]
    for name, default, domain in mechanical_rows(cls):
        row = keep.get(name)
        unit = row.unit if row else ""
        meaning = row.meaning if row else "TODO"
        lines.append(f"| `{name}` | `{default}` | {domain} | {unit} | {meaning} |")
    lines.append("<!-- end fields -->")
    return "\n".join(lines)


def update_spec(spec_dir: Path) -> None:
    """Regenerate every block in place; append missing blocks at the end of their file."""
    by_area: Dict[str, List[type]] = {}
    for cls in documented_classes().values():
        by_area.setdefault(cls.spec_area, []).append(cls)
    for area, classes in sorted(by_area.items()):
        path = spec_dir / f"{area}.md"
        text = path.read_text() if path.exists() else f"# {area}\n"
        blocks = parse_blocks(text)
        for cls in classes:
            new = render_block(cls, blocks.get(cls.__name__))
            if cls.__name__ in blocks:
                text = _BLOCK.sub(
                    lambda m, n=cls.__name__, new=new: new if m.group(1) == n else m.group(0), text
                )
            else:
                text = text.rstrip("\n") + f"\n\n## {cls.__name__}\n\n{new}\n"
        path.write_text(text)


if __name__ == "__main__":  # pragma: no cover - maintenance tool
    update_spec(Path(sys.argv[1] if len(sys.argv) > 1 else "spec"))
