"""Utility parameters: drift, weight clip/modifier/remap, mapping, input range (spec/drift.md,
spec/modifiers.md, spec/mapping.md). Class names, fields and defaults follow aihwkit's
``aihwkit.simulator.configs.utils``; where the seed documentation and current aihwkit differ, the
seed documentation wins (spec/deviations.md)."""

from dataclasses import dataclass
from typing import List

from .base import ConfigBase, choice, flag, integer, nested, real, reals
from .enums import WeightClipType, WeightModifierType, WeightRemapType
from .errors import ConfigError

#: Fields of the 'PCMNoise' weight modifier and their defaults: with any other modifier type they
#: must keep these defaults (spec/modifiers.md, §M3).
PCM_NOISE_FIELDS = {
    "pcm_zero_thres": 0.0,
    "pcm_t_inference": 0.0,
    "pcm_prob_at_reset": 0.0,
    "pcm_prob_at_gmax": 0.0,
    "pcm_prob_at_random": 0.0,
    "pcm_t0": 20.0,
}

#: Read duration (s) of the 1/f read noise of the 'PCMNoise' modifier, a constant of aihwkit's
#: CUDA kernel (spec/modifiers.md §M3): pcm_t0 + pcm_t_inference must be at least this long.
PCM_T_READ = 250.0e-9


@dataclass
class SimpleDriftParameter(ConfigBase):
    """Power-law drift without variation (spec/drift.md)."""

    spec_area = "drift"

    nu: float = real(0.0, ge=0)
    t_0: float = real(1.0, gt=0)
    reset_tol: float = real(1e-7, ge=0)


@dataclass
class DriftParameter(SimpleDriftParameter):
    """Power-law drift with device-to-device and weight-dependent coefficients (spec/drift.md)."""

    nu_dtod: float = real(0.0, ge=0)
    nu_std: float = real(0.0, ge=0)
    wg_ratio: float = real(1.0, gt=0)
    g_offset: float = real(0.0)
    w_offset: float = real(0.0)
    nu_k: float = real(0.0)
    log_g0: float = real(0.0)
    w_noise_std: float = real(0.0, ge=0)


@dataclass
class WeightClipParameter(ConfigBase):
    """Weight clipping applied after each optimizer step (spec/modifiers.md)."""

    spec_area = "modifiers"

    fixed_value: float = real(-1.0)
    sigma: float = real(2.5, gt=0)
    type: WeightClipType = choice(WeightClipType, WeightClipType.NONE)


def _poly_coeffs() -> List[float]:
    return [0.0105392, 0.0768, -0.046925]


@dataclass
class WeightModifierParameter(ConfigBase):
    """Weight modification (noise, discretization, drop connect) for hardware-aware training
    (spec/modifiers.md). The default ``type`` is ``Copy`` as on the seed page."""

    spec_area = "modifiers"

    std_dev: float = real(0.0, ge=0)
    per_batch_sample: bool = flag(False)
    res: float = real(0.0)
    sto_round: bool = flag(False)
    dorefa_clip: float = real(0.6, gt=0)
    pdrop: float = real(0.0, ge=0, le=1)
    enable_during_test: bool = flag(False)
    rel_to_actual_wmax: bool = flag(True)
    assumed_wmax: float = real(1.0, gt=0)
    copy_last_column: bool = flag(False)
    coeffs: List[float] = reals(_poly_coeffs)
    type: WeightModifierType = choice(WeightModifierType, WeightModifierType.COPY)
    g_max: float = real(25.0, gt=0)
    pcm_zero_thres: float = real(0.0, ge=0)
    pcm_t_inference: float = real(0.0, ge=0)
    pcm_prob_at_reset: float = real(0.0, ge=0, le=1)
    pcm_prob_at_gmax: float = real(0.0, ge=0, le=1)
    pcm_prob_at_random: float = real(0.0, ge=0, le=1)
    pcm_t0: float = real(20.0, gt=0)

    def _check_consistency(self, prefix: str) -> None:
        if self.type != WeightModifierType.PCM_NOISE:
            for name, default in PCM_NOISE_FIELDS.items():
                if getattr(self, name) != default:
                    raise ConfigError(f"{prefix}{name}: only used by the 'PCMNoise' modifier "
                                      f"(type is {self.type.value!r}); leave it at {default!r} "
                                      f"or set type='PCMNoise'")
        elif self.pcm_t0 + self.pcm_t_inference < PCM_T_READ:
            raise ConfigError(f"{prefix}pcm_t0: pcm_t0 + pcm_t_inference must be at least the "
                              f"read duration {PCM_T_READ!r} s of the 1/f read noise (got "
                              f"{self.pcm_t0!r} + {self.pcm_t_inference!r})")
        if self.per_batch_sample and self.type not in (WeightModifierType.NONE,
                                                       WeightModifierType.COPY):
            raise ConfigError(f"{prefix}per_batch_sample: per-sample weight noise is not "
                              f"supported; refsim draws one modified weight per optimizer step")


@dataclass
class WeightRemapParameter(ConfigBase):
    """Weight remapping onto the conductance range (spec/modifiers.md)."""

    spec_area = "modifiers"

    remapped_wmax: float = real(1.0, gt=0)
    max_scale_range: float = real(0.0, ge=0)
    max_scale_ref: float = real(0.0, ge=0)
    type: WeightRemapType = choice(WeightRemapType, WeightRemapType.NONE)

    def _check_consistency(self, prefix: str) -> None:
        if self.max_scale_range > 0.0 and self.remapped_wmax != 1.0:
            raise ConfigError(f"{prefix}remapped_wmax: must be 1 when max_scale_range > 0 "
                              f"(got {self.remapped_wmax!r})")


@dataclass
class MappingParameter(ConfigBase):
    """Mapping of a logical weight matrix onto physical tiles (spec/mapping.md)."""

    spec_area = "mapping"

    digital_bias: bool = flag(True)
    weight_scaling_omega: float = real(0.0, ge=0)
    weight_scaling_columnwise: bool = flag(False)
    weight_scaling_lr_compensation: bool = flag(False)
    learn_out_scaling: bool = flag(False)
    out_scaling_columnwise: bool = flag(False)
    max_input_size: int = integer(512, ge=0)
    max_output_size: int = integer(512, ge=0)


@dataclass
class InputRangeParameter(ConfigBase):
    """Learned static input range (spec/mapping.md). ``manage_output_clipping`` defaults to True as
    on the seed page (current aihwkit: False)."""

    spec_area = "mapping"

    enable: bool = flag(False)
    learn_input_range: bool = flag(True)
    init_value: float = real(3.0, gt=0)
    init_from_data: int = integer(100, ge=0)
    init_std_alpha: float = real(3.0, gt=0)
    decay: float = real(0.001, ge=0)
    input_min_percentage: float = real(0.95, ge=0, le=1)
    manage_output_clipping: bool = flag(True)
    output_min_percentage: float = real(0.95, ge=0, le=1)
    gradient_scale: float = real(1.0, ge=0)
    gradient_relative: bool = flag(True)


@dataclass
class PrePostProcessingParameter(ConfigBase):
    """Digital pre- and post-processing around a tile (spec/mapping.md)."""

    spec_area = "mapping"

    input_range: InputRangeParameter = nested(InputRangeParameter, "InputRangeParameter")
