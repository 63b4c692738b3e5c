"""refsim's configuration classes, with aihwkit's names, fields, defaults and enum values.

Port an aihwkit script by replacing ``aihwkit.simulator.configs`` with ``refsim.configs``.
Every field is documented in ``spec/`` (see spec/README.md for the index).
"""

from .base import SCHEMA_VERSION, ConfigBase, Domain, from_dict, from_json, registry
from .compounds import (
    BufferedTransferCompound,
    ChoppedTransferCompound,
    DigitalRankUpdateCell,
    DynamicTransferCompound,
    MixedPrecisionCompound,
    OneSidedUnitCell,
    TransferCompound,
    UnitCell,
    VectorUnitCell,
)
from .configs import (
    RPU_CONFIGS,
    DigitalRankUpdateRPUConfig,
    FloatingPointRPUConfig,
    InferenceRPUConfig,
    IOManagedRPUConfig,
    RPUConfigBase,
    RuntimeParameter,
    SingleRPUConfig,
    UnitCellRPUConfig,
)
from .devices import (
    PULSED_DEVICES,
    ConstantStepDevice,
    ExpStepDevice,
    FloatingPointDevice,
    IdealDevice,
    LinearStepDevice,
    PiecewiseStepDevice,
    PowStepDevice,
    PowStepReferenceDevice,
    PulsedDevice,
    SoftBoundsDevice,
    SoftBoundsPmaxDevice,
    SoftBoundsReferenceDevice,
)
from .enums import (
    AnalogMVType,
    BoundManagementType,
    NoiseManagementType,
    PulseType,
    RPUDataType,
    VectorUnitCellUpdatePolicy,
    WeightClipType,
    WeightModifierType,
    WeightNoiseType,
    WeightRemapType,
)
from .errors import ArgumentError, ConfigError
from .helpers import ALGORITHMS, build_config, canonical_algorithm, construction_seed_of
from .inference import GlobalDriftCompensation, PCMLikeNoiseModel, SinglePairConductanceConverter
from .io import IOParameters
from .update import UpdateParameters
from .utils import (
    DriftParameter,
    InputRangeParameter,
    MappingParameter,
    PrePostProcessingParameter,
    SimpleDriftParameter,
    WeightClipParameter,
    WeightModifierParameter,
    WeightRemapParameter,
)

__all__ = [name for name in dir() if not name.startswith("_")]
