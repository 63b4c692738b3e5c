"""Enumerations of the configuration layer (spec/README.md, "Enumerations").

Member names and string values are aihwkit's (``aihwkit.simulator.parameters.enums``), so that a
config serializes to the same strings and ``NoiseManagementType("AbsMax")`` works as there.
"""

from enum import Enum


class RPUDataType(Enum):
    """Data type of the simulation (spec/rpu_configs.md, RuntimeParameter)."""

    FLOAT = "float"
    DOUBLE = "double"
    HALF = "half"


class BoundManagementType(Enum):
    """Bound management of the forward pass (spec/io.md)."""

    NONE = "None"
    ITERATIVE = "Iterative"
    ITERATIVE_WORST_CASE = "IterativeWorstCase"
    SHIFT = "Shift"


class NoiseManagementType(Enum):
    """Noise management: the input scale alpha of an analog pass (spec/io.md)."""

    NONE = "None"
    ABS_MAX = "AbsMax"
    ABS_MAX_NP_SUM = "AbsMaxNPSum"
    MAX = "Max"
    CONSTANT = "Constant"
    AVERAGE_ABS_MAX = "AverageAbsMax"


class WeightNoiseType(Enum):
    """Output-referred weight noise of an analog pass (spec/io.md)."""

    NONE = "None"
    ADDITIVE_CONSTANT = "AdditiveConstant"
    PCM_READ = "PCMRead"


class PulseType(Enum):
    """How the update is turned into pulses (spec/update.md)."""

    NONE = "None"
    STOCHASTIC_COMPRESSED = "StochasticCompressed"
    STOCHASTIC = "Stochastic"
    NONE_WITH_DEVICE = "NoneWithDevice"
    MEAN_COUNT = "MeanCount"
    DETERMINISTIC_IMPLICIT = "DeterministicImplicit"


class WeightModifierType(Enum):
    """Hardware-aware training weight modifier (spec/modifiers.md)."""

    NONE = "None"
    DISCRETIZE = "Discretize"
    MULT_NORMAL = "MultNormal"
    ADD_NORMAL = "AddNormal"
    DISCRETIZE_ADD_NORMAL = "DiscretizeAddNormal"
    DOREFA = "DoReFa"
    POLY = "Poly"
    PCM_NOISE = "PCMNoise"
    PROG_NOISE = "ProgNoise"
    DROP_CONNECT = "DropConnect"
    COPY = "Copy"


class WeightClipType(Enum):
    """Weight clipping during training (spec/modifiers.md)."""

    NONE = "None"
    FIXED_VALUE = "FixedValue"
    LAYER_GAUSSIAN = "LayerGaussian"
    AVERAGE_CHANNEL_MAX = "AverageChannelMax"


class WeightRemapType(Enum):
    """Weight remapping during training (spec/modifiers.md)."""

    NONE = "None"
    LAYERWISE_SYMMETRIC = "LayerwiseSymmetric"
    CHANNELWISE_SYMMETRIC = "ChannelwiseSymmetric"


class VectorUnitCellUpdatePolicy(Enum):
    """Which device of a vector unit cell receives an update (spec/compounds.md)."""

    ALL = "All"
    SINGLE_FIXED = "SingleFixed"
    SINGLE_SEQUENTIAL = "SingleSequential"
    SINGLE_RANDOM = "SingleRandom"


class AnalogMVType(Enum):
    """How an analog matrix-vector product is computed (spec/io.md)."""

    IDEAL = "Ideal"
    ONE_PASS = "OnePass"
    POS_NEG_SEPARATE = "PosNegSeparate"
    POS_NEG_SEPARATE_DIGITAL_SUM = "PosNegSeparateDigitalSum"
    SPLIT_MODE = "SplitMode"
    BIT_WISE = "BitWise"


ALL_ENUMS = (
    RPUDataType,
    BoundManagementType,
    NoiseManagementType,
    WeightNoiseType,
    PulseType,
    WeightModifierType,
    WeightClipType,
    WeightRemapType,
    VectorUnitCellUpdatePolicy,
    AnalogMVType,
)
