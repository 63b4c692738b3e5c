"""Inference-side models held by InferenceRPUConfig: conductance converter, PCM-like statistical
noise model and drift compensation (spec/inference.md). Names and defaults follow aihwkit's
``aihwkit.inference``; refsim holds them as plain configs."""

from dataclasses import dataclass
from typing import List, Optional

from .base import ConfigBase, nested, real, reals


@dataclass
class SinglePairConductanceConverter(ConfigBase):
    """Weights to one pair of conductances, one of them always at ``g_min`` (spec/inference.md)."""

    spec_area = "inference"

    g_max: float = real(25.0, gt=0)
    g_min: float = real(0.0, ge=0)


def _pcm_prog_coeff() -> List[float]:
    return [0.26348, 1.9650, -1.1731]


@dataclass
class PCMLikeNoiseModel(ConfigBase):
    """Statistical PCM programming noise, drift and read noise (spec/inference.md)."""

    spec_area = "inference"

    prog_coeff: List[float] = reals(_pcm_prog_coeff)
    g_converter: SinglePairConductanceConverter = nested(
        SinglePairConductanceConverter, "SinglePairConductanceConverter"
    )
    g_max: Optional[float] = real(None, gt=0, optional=True)
    t_read: float = real(250.0e-9, gt=0)
    t_0: float = real(20.0, gt=0)
    prog_noise_scale: float = real(1.0, ge=0)
    read_noise_scale: float = real(1.0, ge=0)
    drift_scale: float = real(1.0, ge=0)
    prog_coeff_g_max_reference: Optional[float] = real(None, gt=0, optional=True)


@dataclass
class GlobalDriftCompensation(ConfigBase):
    """Global drift compensation: one output scale from a reference read (spec/inference.md)."""

    spec_area = "inference"
