"""Per-operator profile tables on hand-made operators: shares, kinds of work, XNNPACK names, the int8-vs-fp32
comparison and the report section."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeopt.report.profile import Profile, findings, kind_of, xnnpack_operator
from edgeopt.report.results import PROFILE_TOP, profile_lines


def _op(name, kind, precision, ms):
    return {"name": name, "type": kind, "precision": precision, "ms": ms, "calls": 1}


FP32 = Profile("ort fp32", [_op("conv1", "Conv", "fp32", 6.0), _op("conv2", "Conv", "fp32", 3.0),
                            _op("sig", "Sigmoid", "fp32", 1.0)], latency_ms=10.5)
INT8 = Profile("ort int8", [_op("conv1", "QLinearConv", "int8", 2.0), _op("conv2", "Conv", "fp32", 3.0),
                            _op("q", "QuantizeLinear", "quantize", 1.5), _op("dq", "DequantizeLinear", "quantize", 1.5),
                            _op("sig", "Sigmoid", "fp32", 1.0)], latency_ms=9.5)


@pytest.mark.parametrize("name, expected", [
    ("Convolution (NHWC, QC8) IGEMM #3", ("Convolution", "int8")),
    ("Convolution (NHWC, F32) IGEMM", ("Convolution", "fp32")),
    ("Convert (NC, F32, QD8)", ("Convert", "int8")),
    ("Transpose (ND, X32) #1", ("Transpose", "layout")),
    ("Copy (NC)", ("Copy", "layout")),
    ("Fully Connected (NC, F16)", ("Fully Connected", "fp16")),
    ("aten.add.out", ("aten.add.out", "-")),
])
def test_xnnpack_operator_names_give_type_and_precision(name, expected):
    assert xnnpack_operator(name) == expected


def test_from_figures_sorts_and_reads_delegated_operators():
    figures = {"latency_ms_median": 2.0, "profile": {"ops": [
        {"name": "a", "type": "Sigmoid (NC, F32)", "precision": None, "ms": 0.5, "calls": 1},
        {"name": "b", "type": "Conv", "precision": "int8", "ms": 1.0, "calls": 1}]}}
    profile = Profile.from_figures("x", figures)
    assert [op["name"] for op in profile.ops] == ["b", "a"]
    assert profile.ops[1]["type"] == "Sigmoid" and profile.ops[1]["precision"] == "fp32"
    assert profile.coverage == pytest.approx(0.75)


def test_unavailable_profile_keeps_the_reason_and_has_no_coverage():
    profile = Profile.from_figures("x", {"latency_ms_median": 3.0, "profile": {"unavailable": "no profiler"}})
    assert profile.unavailable == "no profiler" and profile.coverage is None and profile.summary(5)["top"] == []


@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40).filter(lambda ms: sum(ms) > 0))
def test_shares_sum_to_one_and_kinds_partition_the_time(ms):
    profile = Profile("p", [_op(f"op{i}", "Conv", ("int8", "fp32", "quantize")[i % 3], m) for i, m in enumerate(ms)],
                      latency_ms=1.0)
    assert sum(profile.share(op) for op in profile.ops) == pytest.approx(1.0)
    assert sum(profile.by_kind().values()) == pytest.approx(profile.profiled_ms)
    assert sum(profile.by_type().values()) == pytest.approx(profile.profiled_ms)


def test_kinds_of_work():
    assert kind_of(_op("r", "Reorder", "int8", 1)) == "quantize / layout"
    assert kind_of(_op("c", "Convolution", "int8", 1)) == "int8 compute"
    assert kind_of(_op("c", "Convolution", "fp16", 1)) == "float compute"


def test_findings_name_the_float_layers_and_the_quantize_overhead():
    lines = findings(FP32, INT8)
    assert any("still runs in float" in line and "conv2" in line for line in lines)
    assert any("3.00 ms" in line and "quantize/dequantize" in line for line in lines)
    assert not any("no less than" in line for line in lines)  # 9.0 ms against 10.0: int8 is faster
    assert any("no less than" in line for line in findings(INT8, FP32.__class__("slow", INT8.ops, 9.0)))


def test_summary_lists_the_top_operators_with_shares():
    summary = INT8.summary(2)
    assert [op["ms"] for op in summary["top"]] == [3.0, 2.0]
    assert summary["top"][0]["share"] == pytest.approx(3.0 / 9.0)
    assert summary["by_kind_ms"] == {"int8 compute": 2.0, "float compute": 4.0, "quantize / layout": 3.0}


def test_report_section_lists_each_profiled_row():
    rows = [{"target": "onnxruntime", "precision": "int8", "device": "local", "threads": 1,
             "profile": INT8.summary(PROFILE_TOP)},
            {"target": "tflite", "precision": "fp32", "device": "local", "threads": 1,
             "profile": Profile.from_figures("t", {"latency_ms_median": 1.0,
                                                   "profile": {"unavailable": "none"}}).summary(PROFILE_TOP)},
            {"target": "ncnn", "precision": "fp32", "device": "local", "threads": 1},
            {"target": "onnxruntime", "precision": "fp32", "device": "local", "threads": 1,
             "profile": FP32.summary(PROFILE_TOP)}]
    lines = profile_lines(rows)
    text = "\n".join(lines)
    assert "| onnxruntime | int8 | local | 1 | 95% | 2.00 | 4.00 | 3.00 |" in text
    assert "| tflite | fp32 | local | 1 | none |" in text and "ncnn" not in text
    assert "`conv2` | Conv | fp32 | 3.000 | 33.3% |" in text
    assert "- onnxruntime on local, 1 thread(s): int8 operators 9.00 ms against fp32's 10.00 ms; " \
           "int8 compute 2.00 ms (fp32 0.00), float compute 4.00 ms (fp32 10.00), quantize / layout 3.00 ms (fp32 0.00)" \
           in text
    assert profile_lines([rows[2]]) == []


def test_repeated_operator_names_become_rows_of_their_own():
    ops = [_op("split", "Split", "fp32", 1.0), _op("split", "Split", "fp32", 2.0), _op("conv", "Conv", "fp32", 3.0)]
    profile = Profile.from_figures("x", {"latency_ms_median": 6.0, "profile": {"ops": ops}})
    assert [op["name"] for op in profile.ops] == ["conv", "split [2]", "split"]
