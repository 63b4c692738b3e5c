"""Configs (spec/README.md, spec/<area>.md): aihwkit's defaults, build_config, validation and the
dict/JSON round trip."""

import copy
import dataclasses
import json
import math
from enum import Enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsim import configs as C
from refsim.configs.base import Domain, registry
from refsim.configs.spec_tables import documented_classes
from seed_pages import DATA, SEEDS, extract

SEED_DEFAULTS = json.loads(DATA.read_text())
#: seed-page mixins whose fields refsim keeps on RPUConfigBase
SEED_MIXINS = {"MapableRPU": "RPUConfigBase", "PrePostProcessingRPU": "RPUConfigBase"}


# -- defaults ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not SEEDS.is_dir(), reason="seed pages (../shared/reference/seeds) absent")
def test_seed_defaults_file_matches_the_pages():
    assert extract() == SEED_DEFAULTS


def _seed_value_matches(expected, actual):
    if isinstance(expected, str) and "." in expected and isinstance(actual, Enum):
        enum_name, member = expected.split(".")
        return type(actual).__name__ == enum_name and actual.name == member
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, float) and actual == expected
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("name", sorted(SEED_DEFAULTS))
def test_every_seed_page_default_is_the_refsim_default(name):
    cls = getattr(C, SEED_MIXINS.get(name, name))
    obj = cls()
    for field, expected in SEED_DEFAULTS[name].items():
        assert hasattr(obj, field), f"{name}.{field} is missing"
        if expected is None:  # a default factory on the page: a nested config or a list
            continue
        actual = getattr(obj, field)
        assert _seed_value_matches(expected, actual), f"{name}.{field}: {actual!r} != {expected!r}"


def test_seed_page_defaults_that_differ_from_current_aihwkit():
    """spec/deviations.md §1: the seed page wins over current aihwkit."""
    assert C.InputRangeParameter().manage_output_clipping is True
    assert C.WeightModifierParameter().type is C.WeightModifierType.COPY


def test_enum_values_are_aihwkits_strings():
    assert C.NoiseManagementType("AbsMax") is C.NoiseManagementType.ABS_MAX
    assert C.PulseType.STOCHASTIC_COMPRESSED.value == "StochasticCompressed"
    assert C.AnalogMVType.POS_NEG_SEPARATE_DIGITAL_SUM.value == "PosNegSeparateDigitalSum"
    assert C.VectorUnitCellUpdatePolicy.SINGLE_RANDOM.value == "SingleRandom"
    # strings are accepted where an enum is expected
    assert C.IOParameters(noise_management="Max").noise_management is C.NoiseManagementType.MAX


def test_inference_config_fixes_device_backward_and_update():
    cfg = C.InferenceRPUConfig()
    assert isinstance(cfg.device, C.IdealDevice)
    assert cfg.backward.is_perfect is True
    assert cfg.update.pulse_type is C.PulseType.NONE
    with pytest.raises(TypeError):
        C.InferenceRPUConfig(backward=C.IOParameters())


def test_soft_bounds_pmax_leaves_derived_fields_none():
    dev = C.SoftBoundsPmaxDevice()
    assert (dev.w_min, dev.w_max, dev.dw_min, dev.up_down) == (None, None, None, None)
    with pytest.raises(C.ConfigError, match="^dw_min"):
        C.SoftBoundsPmaxDevice(dw_min=0.1)
    with pytest.raises(C.ConfigError, match="^range_max"):
        C.SoftBoundsPmaxDevice(range_min=1.0, range_max=1.0)


# -- build_config ------------------------------------------------------------------------------------

ALIASES = [(name, alias) for name, aliases in C.ALGORITHMS.items() for alias in aliases]
DEVICES = [getattr(C, name) for name in C.PULSED_DEVICES]


def _expect(name, cfg, dev_cls):
    """The settings of spec/rpu_configs.md "build_config" (aihwkit's build_config)."""
    io_default, up_default = C.IOParameters(), C.UpdateParameters()
    assert cfg.forward == io_default and cfg.backward == io_default
    assert cfg.forward is not cfg.backward
    no_mgmt = C.IOParameters(noise_management="None", bound_management="None")
    sd_update = C.UpdateParameters(desired_bl=1, update_bl_management=False,
                                   update_management=False)
    if name == "sgd":
        assert type(cfg) is C.SingleRPUConfig and type(cfg.device) is dev_cls
        assert cfg.update == up_default
        return
    if name == "mp":
        assert type(cfg) is C.DigitalRankUpdateRPUConfig
        assert type(cfg.device) is C.MixedPrecisionCompound
        assert type(cfg.device.device) is dev_cls
        assert cfg.device == C.MixedPrecisionCompound(device=cfg.device.device)
        assert cfg.update == up_default
        return
    assert type(cfg) is C.UnitCellRPUConfig
    cell = cfg.device
    assert [type(d) for d in cell.unit_cell_devices] == [dev_cls, dev_cls]
    assert cell.unit_cell_devices[0] is not cell.unit_cell_devices[1]
    if name == "tiki-taka":
        assert type(cell) is C.TransferCompound
        assert cell.transfer_forward == no_mgmt and cell.transfer_update == up_default
        assert cell.units_in_mbatch is True
        assert cfg.update == up_default
        return
    assert cfg.update == C.UpdateParameters(desired_bl=5)
    assert cell.units_in_mbatch is False and cell.fast_lr == {"ttv2": 1.0}.get(name, 0.1)
    if name == "ttv2":
        assert type(cell) is C.ChoppedTransferCompound
        assert cell.in_chop_prob == 0.0 and cell.auto_scale is False
        assert cell.transfer_forward == no_mgmt and cell.transfer_update == sd_update
    elif name == "c-ttv2":
        assert type(cell) is C.ChoppedTransferCompound
        assert cell.in_chop_prob == 0.1 and cell.in_chop_random is True
        assert cell.auto_scale is True
        assert cell.transfer_forward == no_mgmt and cell.transfer_update == sd_update
    else:
        assert name == "agad" and type(cell) is C.DynamicTransferCompound
        assert cell.auto_scale is True and cell.in_chop_random is False
        assert cell.transfer_forward == io_default
        assert cell.transfer_update == C.UpdateParameters(desired_bl=1)


@pytest.mark.parametrize("name, alias", ALIASES)
@pytest.mark.parametrize("dev_cls", [C.ConstantStepDevice, C.SoftBoundsReferenceDevice])
def test_build_config_every_algorithm_and_alias(name, alias, dev_cls):
    for algorithm in (alias, alias.upper()):
        cfg = C.build_config(algorithm, dev_cls, construction_seed=17)
        _expect(name, cfg, dev_cls)
        assert C.construction_seed_of(cfg) == 17, "construction_seed must take effect"
        assert C.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("dev_cls", DEVICES)
@pytest.mark.parametrize("name", sorted(C.ALGORITHMS))
def test_build_config_every_device_class(name, dev_cls):
    _expect(name, C.build_config(name, dev_cls), dev_cls)


@pytest.mark.parametrize("name", sorted(C.ALGORITHMS))
def test_build_config_accepts_instances_and_callables(name):
    device = C.SoftBoundsDevice(dw_min=0.02, w_max=0.9)
    io = C.IOParameters(out_noise=0.01)
    up = C.UpdateParameters(desired_bl=7, sto_round=True)
    before = (copy.deepcopy(device), copy.deepcopy(io), copy.deepcopy(up))
    cfg = C.build_config(name, device, io, up, construction_seed=3)
    assert (device, io, up) == before, "the templates must not be modified"
    devices = [cfg.device] if name == "sgd" else (
        [cfg.device.device] if name == "mp" else cfg.device.unit_cell_devices)
    for dev in devices:
        assert dev is not device and dev.dw_min == 0.02 and dev.w_max == 0.9
    assert cfg.forward.out_noise == 0.01 and cfg.forward is not io
    assert cfg.update.sto_round is True
    # callables receive the same overrides a class would
    seen = []

    def make_device(**kwargs):
        seen.append(kwargs)
        return C.ConstantStepDevice(**kwargs)

    C.build_config(name, make_device, construction_seed=9)
    assert seen and all(set(kw) <= {"construction_seed"} for kw in seen)


def test_build_config_sgd_with_several_devices():
    cfg = C.build_config("sgd", C.LinearStepDevice, n_devices=3, construction_seed=5)
    assert type(cfg) is C.UnitCellRPUConfig and type(cfg.device) is C.VectorUnitCell
    assert cfg.device.update_policy is C.VectorUnitCellUpdatePolicy.SINGLE_RANDOM
    assert [type(d) for d in cfg.device.unit_cell_devices] == [C.LinearStepDevice] * 3
    assert cfg.device.construction_seed == 5 and C.construction_seed_of(cfg) == 5
    # n_devices is ignored by the other algorithms
    assert C.build_config("ttv2", C.LinearStepDevice, n_devices=3) == C.build_config(
        "ttv2", C.LinearStepDevice)


def test_build_config_passes_extra_fields():
    mapping = C.MappingParameter(max_input_size=128)
    cfg = C.build_config("c-ttv2", C.ConstantStepDevice, mapping=mapping)
    assert cfg.mapping.max_input_size == 128
    with pytest.raises(C.ArgumentError, match="no_such_field"):
        C.build_config("sgd", C.ConstantStepDevice, no_such_field=1)


@pytest.mark.parametrize("bad", ["nope", "", "sgd2", None, 3])
def test_build_config_unknown_algorithm(bad):
    with pytest.raises(C.ArgumentError, match="algorithm") as info:
        C.build_config(bad, C.ConstantStepDevice)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_build_config_bad_n_devices(n):
    with pytest.raises(C.ArgumentError, match="n_devices"):
        C.build_config("sgd", C.ConstantStepDevice, n_devices=n)


def test_build_config_bad_seed_names_the_field():
    with pytest.raises(C.ConfigError, match="construction_seed"):
        C.build_config("agad", C.ConstantStepDevice, construction_seed=-3)


# -- Hypothesis: valid and invalid configs -----------------------------------------------------------

CONCRETE = {name: cls for name, cls in documented_classes().items()}


def _accepted_classes(dom: Domain):
    bases = tuple(registry()[name] for name in dom.classes)
    return sorted((c for c in CONCRETE.values() if issubclass(c, bases)), key=lambda c: c.__name__)


def _real(dom: Domain):
    lo = -1e6 if dom.lo is None else dom.lo
    hi = 1e6 if dom.hi is None else dom.hi
    return st.floats(lo, hi, exclude_min=dom.lo_open, exclude_max=dom.hi_open,
                     allow_nan=False, allow_infinity=False)


def valid_value(dom: Domain, depth: int):
    if dom.kind == "real":
        base = _real(dom)
    elif dom.kind == "int":
        base = st.integers(-1000 if dom.lo is None else int(dom.lo),
                           10**6 if dom.hi is None else int(dom.hi))
    elif dom.kind == "bool":
        base = st.booleans()
    elif dom.kind == "enum":
        base = st.sampled_from(list(dom.enum)) | st.sampled_from([m.value for m in dom.enum])
    elif dom.kind == "reals":
        base = st.lists(_real(dom), min_size=1 if dom.nonempty else 0, max_size=5)
    elif dom.kind == "config":
        base = st.sampled_from(_accepted_classes(dom)).flatmap(lambda c: configs(c, depth + 1))
    else:  # configs
        pulsed = _accepted_classes(dom)
        base = st.lists(st.sampled_from(pulsed).flatmap(lambda c: configs(c, depth + 1)),
                        max_size=3 if depth < 2 else 0)
    return (st.none() | base) if dom.optional else base


def _repair(cls, kwargs):
    """Keep generated values consistent with the cross-field rules of the classes (each rule is
    tested on its own in test_cross_field_rules)."""
    if issubclass(cls, C.IOParameters) and kwargs.get("noise_management", "AbsMax") not in (
            "None", C.NoiseManagementType.NONE):
        kwargs["inp_bound"] = 1.0
    if issubclass(cls, C.SoftBoundsPmaxDevice):
        for name in ("w_min", "w_max", "dw_min", "up_down"):
            kwargs[name] = None
        lo, hi = sorted((kwargs.get("range_min", -1.0), kwargs.get("range_max", 1.0)))
        kwargs["range_min"], kwargs["range_max"] = -abs(lo), hi + abs(lo) + 1.0
    if issubclass(cls, C.PiecewiseStepDevice):
        up = kwargs.setdefault("piecewise_up", [1.0])
        kwargs["piecewise_down"] = (list(kwargs.get("piecewise_down", [])) + [1.0] * len(up))[
            : len(up)]
    if issubclass(cls, C.UnitCell):
        devices = kwargs.get("unit_cell_devices", [])
        if issubclass(cls, C.ChoppedTransferCompound):
            devices = kwargs["unit_cell_devices"] = (devices * 2)[:2]
            kwargs.update(n_reads_per_transfer=1, random_selection=False)
        for name in ("gamma_vec", "transfer_every_vec", "transfer_lr_vec"):
            if kwargs.get(name):
                kwargs[name] = ([1.0] * len(devices)) if devices else []
        if issubclass(cls, (C.BufferedTransferCompound, C.ChoppedTransferCompound)):
            kwargs["with_reset_prob"] = 0.0
        elif not kwargs.get("transfer_columns", True):
            kwargs["with_reset_prob"] = 0.0
        if issubclass(cls, C.DynamicTransferCompound):
            kwargs.update(in_chop_prob=kwargs.get("in_chop_prob", 0.1) or 0.1,
                          auto_momentum=min(max(kwargs.get("auto_momentum", 0.5), 0.01), 0.99),
                          out_chop_prob=0.0)
    if issubclass(cls, C.MixedPrecisionCompound):
        for name in ("n_x_bins", "n_d_bins"):
            if kwargs.get(name) == 1:
                kwargs[name] = 2
    if issubclass(cls, C.WeightModifierParameter):
        pcm = kwargs.get("type") in ("PCMNoise", C.WeightModifierType.PCM_NOISE)
        t_read = C.utils.PCM_T_READ
        if not pcm or kwargs.get("pcm_t0", 20.0) + kwargs.get("pcm_t_inference", 0.0) < t_read:
            for name in C.utils.PCM_NOISE_FIELDS:  # only 'PCMNoise' takes them (t ≥ t_read)
                kwargs.pop(name, None)
        kwargs["per_batch_sample"] = False
    if issubclass(cls, C.WeightRemapParameter) and kwargs.get("max_scale_range", 0) > 0:
        kwargs["remapped_wmax"] = 1.0
    if issubclass(cls, C.IOManagedRPUConfig) and "pre_post" in kwargs:
        kwargs["pre_post"].input_range.manage_output_clipping = False
    return kwargs


@st.composite
def configs(draw, cls, depth=0):
    kwargs = {}
    for f, dom in cls.domains():
        if f.init and draw(st.booleans()):
            kwargs[f.name] = draw(valid_value(dom, depth))
    return cls(**_repair(cls, kwargs))


any_config = st.sampled_from(sorted(CONCRETE.values(), key=lambda c: c.__name__)).flatmap(configs)
rpu_config = st.sampled_from(C.RPU_CONFIGS).flatmap(configs)


@pytest.mark.parametrize("name", sorted(C.ALGORITHMS))
@pytest.mark.parametrize("dev_cls", DEVICES)
def test_built_configs_round_trip(name, dev_cls):
    cfg = C.build_config(name, dev_cls, construction_seed=11)
    data = cfg.to_dict()
    assert data["__schema__"] == C.SCHEMA_VERSION
    assert C.from_dict(data) == cfg
    assert C.from_json(cfg.to_json()).to_dict() == data
    assert json.loads(cfg.to_json()) == data


@given(any_config)
def test_generated_configs_round_trip_exactly(cfg):
    text = cfg.to_json()
    back = type(cfg).from_json(text)
    assert back == cfg and back.to_json() == text
    # floats survive bit for bit
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(back, f.name)
        if isinstance(a, float):
            assert math.copysign(1, a) == math.copysign(1, b) and a.hex() == b.hex()


def _short_cells(cfg):
    """Paths of the unit cells in ``cfg`` with fewer devices than a tile needs."""
    out, stack = [], [("", cfg)]
    while stack:
        prefix, obj = stack.pop()
        if isinstance(obj, C.UnitCell) and len(obj.unit_cell_devices) < obj.min_devices:
            out.append(prefix + "unit_cell_devices")
        for f, dom in obj.domains():
            value = getattr(obj, f.name)
            if isinstance(value, C.ConfigBase):
                stack.append((prefix + f.name + ".", value))
    return out


@given(rpu_config)
def test_generated_rpu_configs_round_trip_and_validate(cfg):
    assert C.from_dict(cfg.to_dict()) == cfg
    short = _short_cells(cfg)
    if not short:
        assert cfg.validate() is cfg
        return
    # validate() also checks that a tile can be built: a cell without its devices is named
    with pytest.raises(C.ConfigError, match="needs at least"):
        cfg.validate()


@pytest.mark.parametrize("cell", [C.VectorUnitCell(), C.OneSidedUnitCell(), C.TransferCompound(),
                                  C.BufferedTransferCompound(), C.ChoppedTransferCompound(),
                                  C.DynamicTransferCompound()])
def test_validate_names_a_cell_without_devices(cell):
    with pytest.raises(C.ConfigError, match=r"^device\.unit_cell_devices: .*needs at least"):
        C.UnitCellRPUConfig(device=cell).validate()
    cell.unit_cell_devices = [C.ConstantStepDevice()] * max(cell.min_devices, 2 if isinstance(
        cell, C.ChoppedTransferCompound) else 1)
    C.UnitCellRPUConfig(device=cell).validate()


def invalid_value(dom: Domain):
    """Values outside the domain (each must raise ConfigError)."""
    wrong_type = st.sampled_from(["text", b"bytes", object(), [1, 2], {"a": 1}])
    if dom.kind == "real":
        out = [st.sampled_from([math.nan, math.inf, -math.inf, True]), wrong_type]
        if dom.lo is not None:
            out.append(st.floats(-1e9, dom.lo, exclude_max=not dom.lo_open, allow_nan=False))
        if dom.hi is not None:
            out.append(st.floats(dom.hi, 1e9, exclude_min=not dom.hi_open, allow_nan=False))
    elif dom.kind == "int":
        out = [st.sampled_from([1.5, True, "3", math.nan]), wrong_type]
        if dom.lo is not None:
            out.append(st.integers(-10**9, int(dom.lo) - 1))
        if dom.hi is not None:
            out.append(st.integers(int(dom.hi) + 1, int(dom.hi) + 10**9))
    elif dom.kind == "bool":
        out = [st.sampled_from([0, 1, 1.0, "True", "yes"])]
    elif dom.kind == "enum":
        out = [st.sampled_from(["NotAMember", "absmax", 3, 1.0])]
    elif dom.kind == "reals":
        out = [st.sampled_from(["1,2", 3.0, [math.nan], ["x"], [True], [math.inf]])]
        if dom.nonempty:
            out.append(st.just([]))
    else:
        out = [st.sampled_from([3, "IOParameters", C.SimpleDriftParameter, [object()]])]
        if dom.kind == "config":  # a config of a class the field does not accept
            accepted = tuple(_accepted_classes(dom))
            out.append(st.sampled_from([c() for c in (C.WeightClipParameter, C.RuntimeParameter)
                                        if not issubclass(c, accepted)]))
    if not dom.optional:
        out.append(st.none())
    return st.one_of(out)


def _invalid_field(draw, cls):
    f, dom = draw(st.sampled_from([(f, dom) for f, dom in cls.domains() if f.init]))
    return f.name, draw(invalid_value(dom))


@st.composite
def invalid_case(draw):
    cls = draw(st.sampled_from([c for c in sorted(CONCRETE.values(), key=lambda c: c.__name__)
                                if any(f.init for f, _ in c.domains())]))
    return (cls, *_invalid_field(draw, cls))


@given(invalid_case())
def test_invalid_values_raise_config_error_naming_the_field(case):
    cls, name, value = case
    with pytest.raises(C.ConfigError) as info:
        cls(**{name: value})
    assert str(info.value).startswith(name), str(info.value)
    assert isinstance(info.value, ValueError)


NESTED_SLOTS = ["forward", "backward", "update", "device", "mapping", "runtime"]


@given(st.sampled_from(NESTED_SLOTS), st.data())
def test_invalid_nested_values_name_the_dotted_path(slot, data):
    outer = C.SingleRPUConfig()
    inner = getattr(outer, slot)
    name, value = _invalid_field(data.draw, type(inner))
    setattr(inner, name, value)  # fields can be changed after construction, as in aihwkit
    with pytest.raises(C.ConfigError) as info:
        outer.validate()
    assert str(info.value).startswith(f"{slot}.{name}"), str(info.value)
    as_dict = C.SingleRPUConfig().to_dict()
    as_dict[slot][name] = value
    try:
        json.dumps(as_dict)
    except (TypeError, ValueError):
        return  # not representable in a dict read from JSON
    with pytest.raises(C.ConfigError) as info:
        C.from_dict(as_dict)
    assert str(info.value).startswith(f"{slot}.{name}"), str(info.value)


def test_noise_management_requires_unit_input_bound():
    with pytest.raises(C.ConfigError, match=r"^forward\.inp_bound"):
        C.from_dict({"__class__": "SingleRPUConfig",
                     "forward": {"__class__": "IOParameters", "inp_bound": 2.0}})
    C.IOParameters(inp_bound=2.0, noise_management="None")
    C.IOParameters(inp_bound=2.0, is_perfect=True)


def test_piecewise_nodes_must_match():
    with pytest.raises(C.ConfigError, match="^piecewise_down"):
        C.PiecewiseStepDevice(piecewise_up=[1.0, 0.5], piecewise_down=[1.0])


@pytest.mark.parametrize(
    "data, path",
    [
        ({"__class__": "SingleRPUConfig", "nope": 1}, "nope"),
        ({"__class__": "SingleRPUConfig", "update": {"__class__": "UpdateParameters", "x": 1}},
         "update.x"),
        ({"__class__": "UnitCellRPUConfig",
          "device": {"__class__": "VectorUnitCell",
                     "unit_cell_devices": [{"__class__": "ConstantStepDevice", "dw_minn": 1}]}},
         r"device.unit_cell_devices\[0\].dw_minn"),
        ({"__class__": "NoSuchConfig"}, "<root>"),
        ({"__class__": "SingleRPUConfig", "device": {"__class__": "IOParameters"}}, "device"),
        ({"__class__": "SingleRPUConfig", "__schema__": 99}, "__schema__"),
        ({"__class__": "SingleRPUConfig", "forward": 3}, "forward"),
    ],
)
def test_bad_dicts_name_the_field(data, path):
    with pytest.raises(C.ConfigError, match="^" + path):
        C.from_dict(data)


def test_from_dict_checks_the_requested_class():
    with pytest.raises(C.ConfigError, match="SingleRPUConfig"):
        C.SingleRPUConfig.from_dict(C.IOParameters().to_dict())
    assert C.IOParameters.from_dict(C.IOParameters(out_noise=0.5).to_dict()).out_noise == 0.5


def test_json_is_strict_and_numbers_are_normalised():
    cfg = C.IOParameters(out_bound=10)  # an int for a float field is stored as a float
    assert isinstance(cfg.out_bound, float)
    assert "NaN" not in cfg.to_json() and "Infinity" not in cfg.to_json()
    import numpy as np

    assert C.IOParameters(out_noise=np.float32(0.5), max_bm_factor=np.int64(7)).max_bm_factor == 7


def _modifier(**kw):
    return C.WeightModifierParameter(**kw)


CROSS_FIELD_RULES = [
    # (constructor, path that the message must start with)
    (lambda: C.VectorUnitCell(unit_cell_devices=[C.ConstantStepDevice()] * 2, gamma_vec=[1.0]),
     "gamma_vec"),
    (lambda: C.TransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 2,
                                transfer_lr_vec=[1, 2, 3]), "transfer_lr_vec"),
    (lambda: C.TransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 2,
                                transfer_every_vec=[1.0]), "transfer_every_vec"),
    (lambda: C.TransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 2,
                                gamma_vec=[1.0, 0.0]), "gamma_vec"),
    (lambda: C.TransferCompound(with_reset_prob=0.5, transfer_columns=False), "with_reset_prob"),
    (lambda: C.BufferedTransferCompound(with_reset_prob=0.5), "with_reset_prob"),
    (lambda: C.ChoppedTransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 3),
     "unit_cell_devices"),
    (lambda: C.ChoppedTransferCompound(n_reads_per_transfer=2), "n_reads_per_transfer"),
    (lambda: C.ChoppedTransferCompound(random_selection=True), "random_selection"),
    (lambda: C.ChoppedTransferCompound(with_reset_prob=0.1), "with_reset_prob"),
    (lambda: C.DynamicTransferCompound(in_chop_prob=0.0), "in_chop_prob"),
    (lambda: C.DynamicTransferCompound(auto_momentum=1.0), "auto_momentum"),
    (lambda: C.DynamicTransferCompound(out_chop_prob=0.1), "out_chop_prob"),
    (lambda: C.MixedPrecisionCompound(n_x_bins=1), "n_x_bins"),
    (lambda: C.MixedPrecisionCompound(n_d_bins=1), "n_d_bins"),
    (lambda: C.SoftBoundsPmaxDevice(range_min=0.5, range_max=2.0), "range_min"),
    (lambda: C.SoftBoundsPmaxDevice(w_max=1.0), "w_max"),
    (lambda: _modifier(type="PCMNoise", pcm_t0=1e-7), "pcm_t0"),
    (lambda: _modifier(pcm_t0=10.0), "pcm_t0"),
    (lambda: _modifier(pcm_prob_at_gmax=0.1), "pcm_prob_at_gmax"),
    (lambda: _modifier(type="AddNormal", per_batch_sample=True), "per_batch_sample"),
    (lambda: C.WeightRemapParameter(max_scale_range=2.0, remapped_wmax=0.5), "remapped_wmax"),
    (lambda: C.SingleRPUConfig(pre_post=C.PrePostProcessingParameter(
        input_range=C.InputRangeParameter(enable=True))),
     "pre_post.input_range.manage_output_clipping"),
    (lambda: C.InferenceRPUConfig(
        forward=C.IOParameters(is_perfect=True, noise_management="None",
                               bound_management="None"),
        pre_post=C.PrePostProcessingParameter(input_range=C.InputRangeParameter(enable=True))),
     "pre_post.input_range.manage_output_clipping"),
    (lambda: C.IOParameters(inp_bound=0.5), "inp_bound"),
    (lambda: C.PiecewiseStepDevice(piecewise_up=[1.0, 1.0]), "piecewise_down"),
]


@pytest.mark.parametrize("make, path", CROSS_FIELD_RULES)
def test_cross_field_rules(make, path):
    with pytest.raises(C.ConfigError) as info:
        make()
    assert str(info.value).startswith(path), str(info.value)


def test_cross_field_rules_accept_the_valid_side():
    C.VectorUnitCell(unit_cell_devices=[C.ConstantStepDevice()] * 2, gamma_vec=[0.5, 0.5])
    C.TransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 2, gamma_vec=[0.0, 1.0],
                       transfer_every_vec=[1.0, 0.0], transfer_lr_vec=[1.0, 1.0])
    C.TransferCompound(with_reset_prob=0.5)
    C.ChoppedTransferCompound(unit_cell_devices=[C.ConstantStepDevice()] * 2)
    C.MixedPrecisionCompound(n_x_bins=2, n_d_bins=0)
    C.SoftBoundsPmaxDevice(range_min=0.0, range_max=2.0)
    _modifier(type="Copy", per_batch_sample=True)
    _modifier(type="PCMNoise", pcm_t0=1e-7, pcm_t_inference=1.5e-7, pcm_prob_at_gmax=0.1)
    C.WeightRemapParameter(max_scale_range=2.0)
    C.SingleRPUConfig(
        forward=C.IOParameters(noise_management="None", bound_management="None"),
        pre_post=C.PrePostProcessingParameter(input_range=C.InputRangeParameter(enable=True)))
