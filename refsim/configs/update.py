"""UpdateParameters: how an update is turned into pulse trains (spec/update.md)."""

from dataclasses import dataclass

from .base import ConfigBase, ConfigError, choice, flag, integer, real
from .enums import PulseType


@dataclass
class UpdateParameters(ConfigBase):
    """Pulse-train generation of the pulsed update. Field semantics: spec/update.md."""

    spec_area = "update"

    desired_bl: int = integer(31, ge=1)
    fixed_bl: bool = flag(True)
    pulse_type: PulseType = choice(PulseType, PulseType.STOCHASTIC_COMPRESSED)
    res: float = real(0.0)
    x_res_implicit: float = real(0.0, ge=0)
    d_res_implicit: float = real(0.0, ge=0)
    d_sparsity: bool = flag(False)
    sto_round: bool = flag(False)
    update_bl_management: bool = flag(True)
    update_management: bool = flag(True)
    um_grad_scale: float = real(1.0, gt=0)

    def _check_complete(self, prefix: str) -> None:
        if self.pulse_type == PulseType.DETERMINISTIC_IMPLICIT and self.res != 0.0:
            raise ConfigError(
                f"{prefix}res: {self.res!r} has no effect with pulse_type 'DeterministicImplicit', "
                f"which quantizes its probabilities with x_res_implicit and d_res_implicit "
                f"(spec/pulses.md §U4; aihwkit ignores res there too); set res = 0")
