"""Device configs: floating point, ideal and the pulsed device models (spec/devices.md).

Class names, field names and defaults are aihwkit's (``aihwkit.simulator.configs.devices``).
"""

from dataclasses import dataclass
from typing import List, Optional

from .base import ConfigBase, flag, integer, nested, real, reals
from .errors import ConfigError
from .utils import DriftParameter, SimpleDriftParameter

#: Largest construction seed (seeds are 32-bit words of the random streams, spec/rng.md).
MAX_SEED = 2**32 - 1


def _seed() -> int:
    return integer(0, ge=0, le=MAX_SEED)


@dataclass
class FloatingPointDevice(ConfigBase):
    """A floating-point 'device': exact updates, optional decay, diffusion and drift."""

    spec_area = "devices"

    diffusion: float = real(0.0, ge=0)
    lifetime: float = real(0.0, ge=0)
    drift: SimpleDriftParameter = nested(SimpleDriftParameter, "SimpleDriftParameter")


@dataclass
class PulsedDevice(ConfigBase):
    """Fields shared by every pulsed device model (spec/devices.md, "PulsedDevice")."""

    spec_area = "devices"

    construction_seed: int = _seed()
    corrupt_devices_prob: float = real(0.0, ge=0, le=1)
    corrupt_devices_range: float = real(0.1, ge=0)
    diffusion: float = real(0.0, ge=0)
    diffusion_dtod: float = real(0.0, ge=0)
    drift: DriftParameter = nested(DriftParameter, "DriftParameter")
    dw_min: float = real(0.001, gt=0)
    dw_min_dtod: float = real(0.3, ge=0)
    dw_min_dtod_log_normal: bool = flag(False)
    dw_min_std: float = real(0.3, ge=0)
    enforce_consistency: bool = flag(True)
    lifetime: float = real(0.0, ge=0)
    lifetime_dtod: float = real(0.0, ge=0)
    perfect_bias: bool = flag(False)
    reset: float = real(0.0)
    reset_dtod: float = real(0.0, ge=0)
    reset_std: float = real(0.01, ge=0)
    up_down: float = real(0.0)
    up_down_dtod: float = real(0.01, ge=0)
    w_max: float = real(0.6)
    w_max_dtod: float = real(0.3, ge=0)
    w_min: float = real(-0.6)
    w_min_dtod: float = real(0.3, ge=0)
    count_pulses: bool = flag(False)


@dataclass
class IdealDevice(ConfigBase):
    """An ideal device: floating-point update, optional decay, diffusion and reset noise."""

    spec_area = "devices"

    construction_seed: int = _seed()
    diffusion: float = real(0.0, ge=0)
    lifetime: float = real(0.0, ge=0)
    reset_std: float = real(0.01, ge=0)


@dataclass
class ConstantStepDevice(PulsedDevice):
    """Constant step per pulse, hard bounds."""


@dataclass
class LinearStepDevice(PulsedDevice):
    """Step that changes linearly with the weight."""

    gamma_up: float = real(0.0)
    gamma_down: float = real(0.0)
    gamma_up_dtod: float = real(0.05, ge=0)
    gamma_down_dtod: float = real(0.05, ge=0)
    allow_increasing: bool = flag(False)
    mean_bound_reference: bool = flag(True)
    mult_noise: bool = flag(True)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)
    reverse_up: bool = flag(False)
    reverse_down: bool = flag(False)
    reverse_offset: float = real(0.01)


@dataclass
class SoftBoundsDevice(PulsedDevice):
    """Soft bounds: the step shrinks linearly to zero at the bound."""

    mult_noise: bool = flag(True)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)
    reverse_up: bool = flag(False)
    reverse_down: bool = flag(False)
    reverse_offset: float = real(0.01)


@dataclass
class SoftBoundsPmaxDevice(SoftBoundsDevice):
    """Soft bounds given by the number of pulses ``p_max`` that sweep the range.

    ``w_min``, ``w_max``, ``dw_min`` and ``up_down`` are derived (spec/devices.md) and must stay
    None.
    """

    p_max: int = integer(1000, ge=1)
    alpha: float = real(0.001 / 2, gt=0)
    range_min: float = real(-1.0)
    range_max: float = real(1.0)
    w_min: Optional[float] = real(None, optional=True)
    w_max: Optional[float] = real(None, optional=True)
    dw_min: Optional[float] = real(None, gt=0, optional=True)
    up_down: Optional[float] = real(None, optional=True)

    def _check_consistency(self, prefix: str) -> None:
        for name in ("w_min", "w_max", "dw_min", "up_down"):
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"{prefix}{name}: is derived from p_max, alpha, range_min and range_max "
                    f"for SoftBoundsPmaxDevice and must be None"
                )
        if not self.range_max > self.range_min:
            raise ConfigError(
                f"{prefix}range_max: must be greater than range_min "
                f"({self.range_max!r} <= {self.range_min!r})"
            )
        if self.range_min > 0.0:
            raise ConfigError(
                f"{prefix}range_min: must be <= 0 (the bounds must contain 0), got "
                f"{self.range_min!r}"
            )


@dataclass
class SoftBoundsReferenceDevice(PulsedDevice):
    """Soft bounds around a per-device reference (subtracted) conductance."""

    mult_noise: bool = flag(False)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)
    slope_up_dtod: float = real(0.0, ge=0)
    slope_down_dtod: float = real(0.0, ge=0)
    reference_mean: float = real(0.0)
    reference_std: float = real(0.0, ge=0)
    subtract_symmetry_point: bool = flag(False)


@dataclass
class ExpStepDevice(PulsedDevice):
    """Exponential step-size dependence on the weight."""

    A_up: float = real(0.00081)
    A_down: float = real(0.36833)
    gamma_up: float = real(12.44625)
    gamma_down: float = real(12.78785)
    a: float = real(0.244)
    b: float = real(0.2425)
    dw_min_std_add: float = real(0.0, ge=0)
    dw_min_std_slope: float = real(0.0, ge=0)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)


@dataclass
class PowStepDevice(PulsedDevice):
    """Step proportional to a power of the distance to the bound."""

    pow_gamma: float = real(1.0, ge=0)
    pow_gamma_dtod: float = real(0.1, ge=0)
    pow_up_down: float = real(0.0)
    pow_up_down_dtod: float = real(0.0, ge=0)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)


@dataclass
class PowStepReferenceDevice(PulsedDevice):
    """PowStep around a per-device reference (subtracted) conductance."""

    pow_gamma: float = real(1.0, ge=0)
    pow_gamma_dtod: float = real(0.1, ge=0)
    pow_up_down: float = real(0.0)
    pow_up_down_dtod: float = real(0.0, ge=0)
    subtract_symmetry_point: bool = flag(False)
    n_estimation_steps: int = integer(-1)
    reference_mean: float = real(0.0)
    reference_std: float = real(0.0, ge=0)


def _one() -> List[float]:
    return [1.0]


@dataclass
class PiecewiseStepDevice(PulsedDevice):
    """Step factor interpolated piecewise-linearly over the weight range."""

    piecewise_up: List[float] = reals(_one, nonempty=True)
    piecewise_down: List[float] = reals(_one, nonempty=True)
    write_noise_std: float = real(0.0, ge=0)
    apply_write_noise_on_set: bool = flag(True)

    def _check_consistency(self, prefix: str) -> None:
        if len(self.piecewise_up) != len(self.piecewise_down):
            raise ConfigError(
                f"{prefix}piecewise_down: must have as many nodes as piecewise_up "
                f"({len(self.piecewise_down)} != {len(self.piecewise_up)})"
            )


#: Names of the pulsed device classes (accepted wherever a pulsed device is).
PULSED_DEVICES = (
    "ConstantStepDevice",
    "LinearStepDevice",
    "SoftBoundsDevice",
    "SoftBoundsPmaxDevice",
    "SoftBoundsReferenceDevice",
    "ExpStepDevice",
    "PowStepDevice",
    "PowStepReferenceDevice",
    "PiecewiseStepDevice",
)
