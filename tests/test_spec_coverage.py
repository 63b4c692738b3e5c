"""The spec documents every config field (spec/README.md), and the project's own promises hold:
the README's test command is what CI runs."""

import dataclasses
import pathlib
import re

import pytest

from refsim.configs.spec_tables import documented_classes, mechanical_rows, parse_blocks

REPO = pathlib.Path(__file__).resolve().parents[1]
SPEC = REPO / "spec"


def _blocks():
    blocks = {}
    for path in SPEC.glob("*.md"):
        for name, rows in parse_blocks(path.read_text()).items():
            assert name not in blocks, f"{name} has two field blocks"
            blocks[name] = (path.name, {row.field: row for row in rows})
    return blocks


BLOCKS = _blocks()
CLASSES = documented_classes()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_config_class_has_its_block_in_its_area_file(name):
    cls = CLASSES[name]
    assert name in BLOCKS, f"spec/{cls.spec_area}.md has no field block for {name}"
    assert BLOCKS[name][0] == f"{cls.spec_area}.md"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_field_is_documented_with_the_code_default_and_domain(name):
    cls = CLASSES[name]
    own = {field: (default, domain) for field, default, domain in mechanical_rows(cls)}
    rows = BLOCKS[name][1]
    assert set(rows) == set(own), f"{name}: rows {sorted(rows)} != fields {sorted(own)}"
    for field, (default, domain) in own.items():
        row = rows[field]
        assert (row.default, row.domain) == (default, domain), (
            f"{name}.{field}: spec says default {row.default!r}, domain {row.domain!r}; code "
            f"says {default!r}, {domain!r} (run python -m refsim.configs.spec_tables spec)")
        assert row.unit, f"{name}.{field}: no unit"
        assert len(row.meaning) > 20 and "TODO" not in row.meaning, f"{name}.{field}: no meaning"
    # inherited fields are documented in a base class's block
    for f in dataclasses.fields(cls):
        owners = [base.__name__ for base in cls.__mro__ if base.__name__ in BLOCKS
                  and f.name in BLOCKS[base.__name__][1]]
        assert owners, f"{name}.{f.name} is documented nowhere"


def test_spec_files_referenced_by_the_index_exist():
    index = (SPEC / "README.md").read_text()
    for target in re.findall(r"\]\(([\w./-]+\.md)\)", index):
        assert (SPEC / target).is_file(), f"spec/README.md links to missing {target}"
    for path in SPEC.glob("*.md"):
        if path.name != "README.md":
            assert f"({path.name})" in index, f"spec/README.md does not list {path.name}"


def _readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block"
    return [line for line in block.group(1).splitlines() if line.strip() and
            not line.lstrip().startswith("#")]


def test_readme_starts_with_exactly_two_commands():
    assert len(_readme_commands()) == 2


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()
