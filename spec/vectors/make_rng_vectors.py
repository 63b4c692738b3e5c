"""Write spec/vectors/rng.json: known words, uniforms and normals of the random streams
(spec/rng.md), computed by the reference. Run from the repository root:

    python spec/vectors/make_rng_vectors.py
"""

import json
import pathlib

from refsim import rng

OUT = pathlib.Path(__file__).resolve().parent / "rng.json"

#: (seed, stream, call, start, count): aligned and unaligned starts, a call with a high word,
#: the largest seed, and a start beyond 2**32 words.
CASES = [
    (0, "test.a", 0, 0, 8),
    (1, "test.a", 0, 3, 9),
    (7, "test.b", 5, 0, 6),
    (7, "test.b", 2**32 + 1, 1, 6),
    (2**32 - 1, "io.forward.out_noise", 3, 0, 5),
    (123456789, "update.x_bits", 17, 2**33 + 2, 7),
]


def build():
    cases = []
    for seed, stream, call, start, count in CASES:
        cases.append({
            "seed": seed, "stream": stream, "stream_id": rng.stream_id(stream), "call": call,
            "start": start, "count": count,
            "words": [int(w) for w in rng.random_words(seed, stream, call, start, count)],
            "uniforms": [float(u) for u in rng.uniform(seed, stream, call, count, start=start)],
            "normals": [float(z) for z in rng.normal(seed, stream, call, count, start=start)],
        })
    return {
        "format": "refsim-rng-vectors", "version": 1,
        "description": "Philox4x32-10 words, uniforms (w >> 8)*2^-24 and AS241 normals of "
                       "(2w+1)*2^-33 at (seed, stream, call, start..start+count-1); spec/rng.md",
        "cases": cases,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
