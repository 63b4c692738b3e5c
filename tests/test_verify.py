"""``refsim verify`` (refsim/verify.py, spec/verify.md): checking another implementation of
analog tiles against refsim on deterministic cases."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from refsim import configs, verify
from refsim.cli import main

DATA = Path(__file__).resolve().parent / "data"
SPEC = Path(__file__).resolve().parents[1] / "spec"

#: The one form of every command-line error (refsim.cli._error_text).
ERROR_LINE = re.compile(r"refsim verify: error: (.+), see 'refsim verify --help'")


@pytest.fixture
def adapters(monkeypatch):
    """The toy adapters of tests/data/verify_adapters.py, importable as ``verify_adapters``."""
    monkeypatch.syspath_prepend(str(DATA))
    import verify_adapters

    return verify_adapters


def _report(capsys, args):
    status = main(["verify", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_refsim_against_itself_is_all_exact(capsys):
    status, report = _report(capsys, ["--probes", "60", "--seed", "7"])
    assert status == 0 and report["ok"]
    totals = report["totals"]
    assert totals["cases"] == 60 + report["golden_cases"] and report["golden_cases"] > 0
    assert totals["exact"] == totals["cases"] and totals["differs"] == 0
    assert {g["stage"] for g in report["results"]} == set(verify.STAGES)
    # the default output is the Markdown report
    assert main(["verify", "--probes", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# refsim verify: refsim against refsim")
    assert "**Result: everything is exact or within tolerance.**" in text


def test_the_golden_cases_are_the_deterministic_vectors():
    cases = verify.golden_cases()
    assert cases, "no deterministic golden vector"
    for case in cases:
        assert verify.is_deterministic(case.config, case.stage)
        assert case.expected is not None
    single = configs.SingleRPUConfig().to_dict()
    assert not verify.is_deterministic(single, "forward")      # out_noise 0.06
    assert not verify.is_deterministic(single, "update")       # StochasticCompressed, dw_min_std
    clean = verify.make_deterministic(single)
    assert all(verify.is_deterministic(clean, s) for s in verify.STAGES)
    assert verify.is_deterministic(configs.FloatingPointRPUConfig().to_dict(), "update")


def test_a_wrong_inp_res_is_caught_and_localised(capsys, adapters):
    status, report = _report(capsys, ["--against", "verify_adapters:InpResDoubled",
                                      "--probes", "60"])
    assert status == 1 and not report["ok"]
    assert "forward.inp_res" in report["differing_parameters"]
    assert {g["stage"] for g in report["results"] if g["differs"]} == {"forward"}
    assert "forward.inp_res" in report["diagnosis"]["forward"]
    group = next(g for g in report["results"] if g["parameter"] == "forward.inp_res")
    assert group["section"] == "spec/io.md §S4" and group["exact"] == 0
    first = group["first_difference"]
    w = np.asarray(first["request"]["weights"])
    x = np.asarray(first["request"]["x"])
    assert w.size <= 4 and x.shape[0] == 1, first["minimised"]
    assert first["changes"]["forward.inp_res"] == first["value"]
    assert np.asarray(first["expected"]).shape == np.asarray(first["actual"]).shape
    assert main(["verify", "--against", "verify_adapters:InpResDoubled", "--probes", "60"]) == 1
    text = capsys.readouterr().out
    assert "### forward: `forward.inp_res` (spec/io.md §S4)" in text
    assert "minimised from" in text and "to 1x1 tile, batch 1" in text


def test_a_wrong_learning_rate_is_caught_in_the_update(adapters):
    report = verify.run(adapters.LrOff(), probes=50, seed=1)
    assert verify.exit_status(report) == 1
    stages = {g["stage"] for g in report["results"] if g["differs"]}
    assert stages == {"update"}
    assert "common cause" in report["diagnosis"]["update"]
    assert "update.(defaults)" in report["differing_parameters"]


def test_a_last_bit_difference_is_within_tolerance():
    class OneUlp(verify.RefsimAdapter):
        def forward(self, config, weights, x):
            y = super().forward(config, weights, x)
            return np.nextafter(y, np.inf)

    report = verify.run(OneUlp(), probes=20, seed=2, golden=False)
    assert report["ok"] and verify.exit_status(report) == 0
    assert report["totals"]["within"] > 0 and report["totals"]["differs"] == 0
    assert verify.compare("update", np.array([1.0]), np.array([1.0 + 1e-9])).status == "differs"
    assert verify.compare("forward", np.array([[0.0, 1.0]]),
                          np.array([[1e-13, 1.0]])).status == "within"
    assert verify.compare("forward", np.zeros((1, 2)), np.zeros((1, 3))).status == "differs"


def test_the_command_adapter_path(capsys):
    command = f"{sys.executable} {DATA / 'verify_command_adapter.py'}"
    assert main(["verify", "--command", command, "--probes", "1"]) == 0
    text = capsys.readouterr().out
    assert "against refsim" in text and "0 differ" in text
    failing = verify.CommandAdapter(
        f"{sys.executable} -c \"print('{{\\\"error\\\": \\\"not implemented\\\"}}')\"")
    report = verify.run(failing, probes=1, golden=False)
    assert not report["ok"]
    first = report["results"][0]["first_difference"]
    assert "not implemented" in first["message"] and first["actual"] is None


def test_the_python_adapter_may_be_a_factory(adapters):
    assert isinstance(verify.load_adapter("verify_adapters:factory"), verify.RefsimAdapter)
    assert isinstance(verify.load_adapter("verify_adapters:LrOff"), adapters.LrOff)


def test_the_report_can_go_to_a_file(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["verify", "--probes", "2", "--json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["format"] == "refsim-verify-report"
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("args, word", [
    (["--probes", "x"], "--probes"),
    (["--probes", "-1"], "--probes"),
    (["--seed", "-1"], "--seed"),
    (["--against", "nope"], "--against"),
    (["--against", "no_such_module_here:x"], "no_such_module_here"),
    (["--against", "json:nothing"], "nothing"),
    (["--against", "refsim", "--command", "true"], "--command"),
    (["--command", ""], "--command"),
    (["--out", "/no/such/directory/report.md"], "--out"),
    (["surplus"], "surplus"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, args, word):
    with pytest.raises(SystemExit) as exc:
        main(["verify", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ERROR_LINE.fullmatch(err.strip()), err
    assert word in err


def test_the_parameter_table_points_into_the_spec():
    for param in verify.PARAMETERS.values():
        assert param.stage in verify.STAGES
        for ref in param.section.split(", "):
            path, _, section = ref.partition(" ")
            text = (SPEC.parent / path).read_text(encoding="utf-8")
            assert section.split("–")[0] in text, (param.name, ref)
    assert verify.deviation_rows("forward.bm_test_negative_bound")
    assert verify.deviation_rows("forward.inp_res") == []


def test_probes_are_reproducible_and_vary_one_parameter():
    a, b = verify.probe(5, 9), verify.probe(5, 9)
    assert np.array_equal(a.weights, b.weights) and a.config == b.config
    for index in range(len(verify.PARAMETERS)):
        case = verify.probe(0, index)
        assert verify.is_deterministic(case.config, case.stage)
        if not case.parameter.endswith("(defaults)"):
            assert case.changes[case.parameter] == case.value
        assert 3 <= case.weights.shape[0] <= 8 and 4 <= case.weights.shape[1] <= 16
