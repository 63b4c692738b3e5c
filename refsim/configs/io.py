"""IOParameters: the analog matrix-vector product's periphery (spec/io.md)."""

from dataclasses import dataclass

from .base import ConfigBase, choice, flag, integer, real
from .enums import AnalogMVType, BoundManagementType, NoiseManagementType, WeightNoiseType
from .errors import ConfigError


@dataclass
class IOParameters(ConfigBase):
    """Forward/backward analog pass: DAC, noise, non-idealities, ADC, noise and bound management.

    Field semantics: spec/io.md.
    """

    spec_area = "io"

    is_perfect: bool = flag(False)
    mv_type: AnalogMVType = choice(AnalogMVType, AnalogMVType.ONE_PASS)
    inp_bound: float = real(1.0)
    inp_noise: float = real(0.0, ge=0)
    inp_res: float = real(1 / (2**7 - 2))
    inp_sto_round: bool = flag(False)
    inp_asymmetry: float = real(0.0)
    out_bound: float = real(12.0)
    out_noise: float = real(0.06, ge=0)
    out_noise_std: float = real(0.0, ge=0)
    out_res: float = real(1 / (2**9 - 2))
    out_sto_round: bool = flag(False)
    out_scale: float = real(1.0)
    out_asymmetry: float = real(0.0)
    bound_management: BoundManagementType = choice(
        BoundManagementType, BoundManagementType.ITERATIVE
    )
    noise_management: NoiseManagementType = choice(
        NoiseManagementType, NoiseManagementType.ABS_MAX
    )
    w_noise: float = real(0.0, ge=0)
    w_noise_type: WeightNoiseType = choice(WeightNoiseType, WeightNoiseType.NONE)
    ir_drop: float = real(0.0, ge=0)
    ir_drop_g_ratio: float = real(1.0 / 0.35 / 5e-6, gt=0)
    out_nonlinearity: float = real(0.0, ge=0)
    out_nonlinearity_std: float = real(0.0, ge=0)
    slope_calibration: float = real(0.0, ge=0)
    v_offset_std: float = real(0.0, ge=0)
    v_offset_w_min: float = real(-1.0)
    r_series: float = real(0.0, ge=0)
    w_read_asymmetry_dtod: float = real(0.0, ge=0)
    max_bm_factor: int = integer(1000, ge=1)
    max_bm_res: float = real(0.25, gt=0)
    bm_test_negative_bound: bool = flag(True)
    nm_thres: float = real(0.0, ge=0)

    def _check_consistency(self, prefix: str) -> None:
        if (
            not self.is_perfect
            and self.noise_management != NoiseManagementType.NONE
            and self.inp_bound != 1.0
        ):
            raise ConfigError(
                f"{prefix}inp_bound: must be exactly 1.0 when noise_management is "
                f"{self.noise_management.value!r} (got {self.inp_bound!r}); set noise_management "
                f"to 'None' to use another input bound"
            )
