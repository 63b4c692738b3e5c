"""refsim: the reference simulator of analog in-memory computing.

* :mod:`refsim.configs` -- aihwkit-compatible configuration classes and ``build_config``;
* :mod:`refsim.rng`     -- the counter-based random streams every stage draws from;
* :mod:`refsim.checkpoint` -- save tiles and :mod:`refsim.nn` models to one ``.npz`` file and
  load them (``AnalogTile.save`` / ``AnalogTile.load``);
* ``refsim_fast``       -- optional compiled kernels (see :func:`fast_info`).

The semantics of every parameter are written in ``spec/``.
"""

__version__ = "0.1.0"


def fast_info() -> dict:
    """Whether the compiled backend ``refsim_fast`` is importable, and how it was built."""
    try:
        import refsim_fast
    except ImportError as err:
        return {"available": False, "reason": str(err)}
    return {"available": True, **refsim_fast.info()}


__all__ = ["__version__", "fast_info"]
