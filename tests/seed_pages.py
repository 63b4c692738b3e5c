"""Read the class signatures (field = default) off the seed documentation pages.

The pages live beside the checkout in ``../shared/reference/seeds/``; ``tests/data/seed_defaults.json``
holds the facts extracted from them (class -> field -> default) so that the defaults test runs
without them, and ``test_seed_defaults_file_matches_the_pages`` re-extracts when they are present.
Run ``python tests/seed_pages.py`` to rewrite the JSON file.
"""

import ast
import json
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = HERE.parents[0].parent / "shared" / "reference" / "seeds"
DATA = HERE / "data" / "seed_defaults.json"

_SIGNATURE = re.compile(r"^class aihwkit\.simulator\.configs\.\w+\.(\w+)\((.*)\)\[source\]$", re.M)


def _value(node):
    """A default as JSON: numbers, bools, enum members as 'Enum.MEMBER', factories as None."""
    if isinstance(node, ast.Attribute):
        return f"{ast.unparse(node.value)}.{node.attr}"
    return ast.literal_eval(node)


def extract(seed_dir=SEEDS):
    out = {}
    for page in sorted(seed_dir.glob("*.txt")):
        for name, args in _SIGNATURE.findall(page.read_text()):
            call = ast.parse(f"f({args.replace('<factory>', 'None')})", mode="eval").body
            out[name] = {kw.arg: _value(kw.value) for kw in call.keywords}
    return out


if __name__ == "__main__":
    DATA.write_text(json.dumps(extract(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}")
