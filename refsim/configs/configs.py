"""RPU configs: the top-level configuration of a tile (spec/rpu_configs.md).

Class names, fields and defaults follow aihwkit's ``aihwkit.simulator.configs.configs``.
"""

from dataclasses import dataclass
from typing import Optional

from .base import ConfigBase, choice, flag, nested
from .compounds import DigitalRankUpdateCell, UnitCell
from .devices import ConstantStepDevice, FloatingPointDevice, IdealDevice, PulsedDevice
from .enums import BoundManagementType, NoiseManagementType, PulseType, RPUDataType
from .errors import ConfigError
from .inference import GlobalDriftCompensation, PCMLikeNoiseModel
from .io import IOParameters
from .update import UpdateParameters
from .utils import (
    MappingParameter,
    PrePostProcessingParameter,
    WeightClipParameter,
    WeightModifierParameter,
    WeightRemapParameter,
)


@dataclass
class RuntimeParameter(ConfigBase):
    """Runtime settings of aihwkit's simulator (spec/rpu_configs.md)."""

    spec_area = "rpu_configs"

    data_type: RPUDataType = choice(RPUDataType, RPUDataType.FLOAT)
    on_the_fly_bindings: bool = flag(False)
    offload_input: bool = flag(False)
    offload_gradient: bool = flag(False)


@dataclass
class RPUConfigBase(ConfigBase):
    """Fields shared by every RPU config: runtime, mapping, pre/post-processing."""

    spec_area = "rpu_configs"

    runtime: RuntimeParameter = nested(RuntimeParameter, "RuntimeParameter")
    mapping: MappingParameter = nested(MappingParameter, "MappingParameter")
    pre_post: PrePostProcessingParameter = nested(
        PrePostProcessingParameter, "PrePostProcessingParameter"
    )


@dataclass
class FloatingPointRPUConfig(RPUConfigBase):
    """A floating-point tile: exact MVM and update."""

    device: FloatingPointDevice = nested(FloatingPointDevice, "FloatingPointDevice")


@dataclass
class IOManagedRPUConfig(RPUConfigBase):
    """Fields shared by the RPU configs with analog forward, backward and update."""

    forward: IOParameters = nested(IOParameters, "IOParameters")
    backward: IOParameters = nested(IOParameters, "IOParameters")
    update: UpdateParameters = nested(UpdateParameters, "UpdateParameters")

    def _check_consistency(self, prefix: str) -> None:
        ir = self.pre_post.input_range
        fwd = self.forward
        if ir.enable and ir.manage_output_clipping and (
            fwd.is_perfect
            or fwd.noise_management != NoiseManagementType.NONE
            or fwd.bound_management != BoundManagementType.NONE
        ):
            raise ConfigError(
                f"{prefix}pre_post.input_range.manage_output_clipping: needs an analog forward "
                f"pass (is_perfect False) with noise_management and bound_management 'None'; "
                f"set those or manage_output_clipping=False"
            )


@dataclass
class SingleRPUConfig(IOManagedRPUConfig):
    """One pulsed device per cross point."""

    device: PulsedDevice = nested(ConstantStepDevice, "PulsedDevice", "IdealDevice")


@dataclass
class UnitCellRPUConfig(IOManagedRPUConfig):
    """A unit cell or transfer compound per cross point."""

    device: UnitCell = nested(UnitCell, "UnitCell")


@dataclass
class DigitalRankUpdateRPUConfig(IOManagedRPUConfig):
    """A cell whose rank update is computed digitally (mixed precision)."""

    device: DigitalRankUpdateCell = nested(DigitalRankUpdateCell, "DigitalRankUpdateCell")


def _inference_backward() -> IOParameters:
    return IOParameters(is_perfect=True)


def _inference_update() -> UpdateParameters:
    return UpdateParameters(pulse_type=PulseType.NONE)


@dataclass
class InferenceRPUConfig(IOManagedRPUConfig):
    """Hardware-aware training and inference: analog forward, perfect backward, FP update.

    ``device``, ``backward`` and ``update`` are fixed as in aihwkit (not constructor arguments).
    """

    noise_model: PCMLikeNoiseModel = nested(PCMLikeNoiseModel, "PCMLikeNoiseModel")
    drift_compensation: Optional[GlobalDriftCompensation] = nested(
        GlobalDriftCompensation, "GlobalDriftCompensation", optional=True
    )
    clip: WeightClipParameter = nested(WeightClipParameter, "WeightClipParameter")
    remap: WeightRemapParameter = nested(WeightRemapParameter, "WeightRemapParameter")
    modifier: WeightModifierParameter = nested(WeightModifierParameter, "WeightModifierParameter")
    device: IdealDevice = nested(IdealDevice, "IdealDevice", init=False)
    backward: IOParameters = nested(_inference_backward, "IOParameters", init=False)
    update: UpdateParameters = nested(_inference_update, "UpdateParameters", init=False)


RPU_CONFIGS = (
    FloatingPointRPUConfig,
    SingleRPUConfig,
    UnitCellRPUConfig,
    DigitalRankUpdateRPUConfig,
    InferenceRPUConfig,
)
