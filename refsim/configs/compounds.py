"""Compound devices: unit cells and the transfer / mixed-precision learning rules
(spec/compounds.md). Class names, fields and defaults are aihwkit's
(``aihwkit.simulator.configs.compounds``)."""

from dataclasses import dataclass
from typing import ClassVar, List

from .base import ConfigBase, choice, flag, integer, nested, nested_list, real, reals
from .devices import MAX_SEED, PulsedDevice
from .enums import VectorUnitCellUpdatePolicy
from .errors import ConfigError
from .io import IOParameters
from .update import UpdateParameters


def _require(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {message}")


def _check_per_device(cell: "UnitCell", prefix: str, *names: str) -> None:
    """Optional per-device vectors must have one entry per device of the cell."""
    k = len(cell.unit_cell_devices)
    for name in names:
        values = getattr(cell, name)
        _require(not values or len(values) == k, prefix + name,
                 f"must have one entry per device ({len(values)} given, {k} devices)")


def _transfer_update() -> UpdateParameters:
    return UpdateParameters(desired_bl=1, update_bl_management=False, update_management=False)


@dataclass
class UnitCell(ConfigBase):
    """Base of the unit cells: a list of devices and a construction seed."""

    spec_area = "compounds"
    #: The fewest devices a cell of this class needs to build a tile (checked by validate()).
    min_devices: ClassVar[int] = 0

    unit_cell_devices: List[PulsedDevice] = nested_list("PulsedDevice")
    construction_seed: int = integer(0, ge=0, le=MAX_SEED)

    def _check_complete(self, prefix: str) -> None:
        k = len(self.unit_cell_devices)
        _require(k >= self.min_devices, prefix + "unit_cell_devices",
                 f"{type(self).__name__} needs at least {self.min_devices} device"
                 f"{'s' if self.min_devices > 1 else ''} to build a tile ({k} given)")


@dataclass
class VectorUnitCell(UnitCell):
    """Several devices per cross point; the weight is their weighted sum."""

    min_devices: ClassVar[int] = 1

    update_policy: VectorUnitCellUpdatePolicy = choice(
        VectorUnitCellUpdatePolicy, VectorUnitCellUpdatePolicy.ALL
    )
    first_update_idx: int = integer(0, ge=0)
    gamma_vec: List[float] = reals(list)

    def _check_consistency(self, prefix: str) -> None:
        _check_per_device(self, prefix, "gamma_vec")


@dataclass
class OneSidedUnitCell(UnitCell):
    """Two devices that only receive up pulses; the weight is their difference, with refresh."""

    min_devices: ClassVar[int] = 1  # one device spec serves both (aihwkit)

    refresh_every: int = integer(0, ge=0)
    units_in_mbatch: bool = flag(True)
    refresh_upper_thres: float = real(0.75, ge=0, le=1)
    refresh_lower_thres: float = real(0.25, ge=0, le=1)
    refresh_forward: IOParameters = nested(IOParameters, "IOParameters")
    refresh_update: UpdateParameters = nested(UpdateParameters, "UpdateParameters")
    copy_inverted: bool = flag(False)


@dataclass
class TransferCompound(UnitCell):
    """Tiki-taka v1: gradient on a fast device, periodic transfer to slower devices."""

    min_devices: ClassVar[int] = 2

    gamma: float = real(0.0, ge=0)
    gamma_vec: List[float] = reals(list)
    transfer_every: float = real(1.0)
    no_self_transfer: bool = flag(True)
    transfer_every_vec: List[float] = reals(list)
    units_in_mbatch: bool = flag(True)
    n_reads_per_transfer: int = integer(1, ge=1)
    transfer_columns: bool = flag(True)
    with_reset_prob: float = real(0.0, ge=0, le=1)
    random_selection: bool = flag(False)
    fast_lr: float = real(1.0)
    transfer_lr: float = real(1.0)
    transfer_lr_vec: List[float] = reals(list)
    scale_transfer_lr: bool = flag(True)
    # aihwkit 1.1.0 pulses D_0 with the absolute fast_lr (its TransferCompound has no such field
    # and the C++ default is off: spec/compounds.md)
    scale_fast_lr: bool = flag(False)
    transfer_forward: IOParameters = nested(IOParameters, "IOParameters")
    transfer_update: UpdateParameters = nested(UpdateParameters, "UpdateParameters")

    def _check_consistency(self, prefix: str) -> None:
        _check_per_device(self, prefix, "gamma_vec", "transfer_every_vec", "transfer_lr_vec")
        _require(not self.gamma_vec or self.gamma_vec[-1] != 0.0, prefix + "gamma_vec",
                 "the last device's weight must not be 0")
        _require(self.with_reset_prob == 0.0 or self.transfer_columns,
                 prefix + "with_reset_prob", "resets need column transfers (transfer_columns)")


@dataclass
class BufferedTransferCompound(TransferCompound):
    """Tiki-taka v2: transfer through a digital buffer with a threshold."""

    thres_scale: float = real(1.0, gt=0)
    step: float = real(1.0, gt=0)
    momentum: float = real(0.1, ge=0, le=1)
    forget_buffer: bool = flag(True)
    transfer_update: UpdateParameters = nested(_transfer_update, "UpdateParameters")

    def _check_consistency(self, prefix: str) -> None:
        super()._check_consistency(prefix)
        _require(self.with_reset_prob == 0.0, prefix + "with_reset_prob",
                 "is not used by BufferedTransferCompound and must be 0")


@dataclass
class ChoppedTransferCompound(TransferCompound):
    """TTv2 / chopped TTv2: buffered transfer with input/output choppers and auto-scaled lr."""

    in_chop_prob: float = real(0.1, ge=0, le=1)
    in_chop_random: bool = flag(True)
    out_chop_prob: float = real(0.0, ge=0, le=1)
    buffer_granularity: float = real(1.0, gt=0)
    auto_granularity: float = real(0.0, ge=0)
    step: float = real(1.0, gt=0)
    momentum: float = real(0.0, ge=0, le=1)
    forget_buffer: bool = flag(True)
    no_buffer: bool = flag(False)
    units_in_mbatch: bool = flag(False)
    auto_scale: bool = flag(False)
    auto_momentum: float = real(0.99, ge=0, le=1)
    correct_gradient_magnitudes: bool = flag(False)
    transfer_columns: bool = flag(True)
    fast_lr: float = real(1.0)
    transfer_lr: float = real(1.0)
    scale_transfer_lr: bool = flag(True)
    scale_fast_lr: bool = flag(False)
    transfer_forward: IOParameters = nested(IOParameters, "IOParameters")
    transfer_update: UpdateParameters = nested(_transfer_update, "UpdateParameters")

    def _check_consistency(self, prefix: str) -> None:
        super()._check_consistency(prefix)
        k = len(self.unit_cell_devices)
        _require(k in (0, 2), prefix + "unit_cell_devices",
                 f"{type(self).__name__} takes exactly 2 devices ({k} given)")
        _require(self.n_reads_per_transfer == 1, prefix + "n_reads_per_transfer",
                 f"must be 1 for {type(self).__name__}")
        _require(not self.random_selection, prefix + "random_selection",
                 f"must be False for {type(self).__name__}")
        _require(self.with_reset_prob == 0.0, prefix + "with_reset_prob",
                 f"must be 0 for {type(self).__name__}")


@dataclass
class DynamicTransferCompound(ChoppedTransferCompound):
    """AGAD: chopped transfer against a dynamically computed reference."""

    in_chop_prob: float = real(0.1, ge=0, le=1)
    in_chop_random: bool = flag(False)
    experimental_correct_accumulation: bool = flag(False)
    step: float = real(1.0, gt=0)
    momentum: float = real(0.0, ge=0, le=1)
    transfer_columns: bool = flag(True)
    buffer_granularity: float = real(1.0, gt=0)
    buffer_cap: float = real(0.0, ge=0)
    forget_buffer: bool = flag(True)
    fast_lr: float = real(1.0)
    transfer_lr: float = real(1.0)
    scale_transfer_lr: bool = flag(True)
    tail_weightening: float = real(5.0, gt=0)
    transfer_forward: IOParameters = nested(IOParameters, "IOParameters")
    transfer_update: UpdateParameters = nested(_transfer_update, "UpdateParameters")

    def _check_consistency(self, prefix: str) -> None:
        super()._check_consistency(prefix)
        _require(self.in_chop_prob > 0.0, prefix + "in_chop_prob",
                 "must be > 0 for DynamicTransferCompound (it sets the chopper period)")
        _require(0.0 < self.auto_momentum < 1.0, prefix + "auto_momentum",
                 "must be strictly between 0 and 1 for DynamicTransferCompound")
        _require(self.out_chop_prob == 0.0, prefix + "out_chop_prob",
                 "is not used by DynamicTransferCompound and must be 0")


def _default_vector_cell() -> VectorUnitCell:
    return VectorUnitCell()


@dataclass
class DigitalRankUpdateCell(ConfigBase):
    """Base of the cells whose rank update is computed digitally."""

    spec_area = "compounds"

    device: ConfigBase = nested(_default_vector_cell, "PulsedDevice", "OneSidedUnitCell",
                                "VectorUnitCell")
    construction_seed: int = integer(0, ge=0, le=MAX_SEED)


@dataclass
class MixedPrecisionCompound(DigitalRankUpdateCell):
    """Mixed precision: digital gradient accumulator, thresholded pulsed transfer to the device."""

    transfer_every: int = integer(1, ge=1)
    n_rows_per_transfer: int = integer(-1)
    random_row: bool = flag(False)
    granularity: float = real(0.0, ge=0)
    transfer_lr: float = real(1.0)
    n_x_bins: int = integer(0, ge=0)
    n_d_bins: int = integer(0, ge=0)
    stoc_round_x: bool = flag(True)
    stoc_round_d: bool = flag(True)

    def _check_consistency(self, prefix: str) -> None:
        for name in ("n_x_bins", "n_d_bins"):
            _require(getattr(self, name) != 1, prefix + name,
                     "1 bin has no nonzero level; use 0 (no quantization) or >= 2")
