"""``python -m refsim_fast``: report how the extension was built."""

from . import info

facts = info()
print(
    f"refsim_fast: built {'with' if facts['openmp'] else 'WITHOUT'} OpenMP, "
    f"using {facts['max_threads']} thread(s) by default"
)
