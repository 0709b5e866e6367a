"""Run results: the Pareto front, the printed table and the files written."""

import csv
import json

from rich.console import Console

from edgeopt.report.results import COLUMNS, pareto_front, results_table, write_results


def row(target, precision, status, latency, map50_95, **extra):
    return {"target": target, "precision": precision, "device": "local", "status": status,
            "latency_ms_median": latency, "map50_95": map50_95, "reason": "", **extra}


RECORDS = [
    row("torch", "fp32", "reference", 30.0, 0.80),
    row("onnxruntime", "fp32", "passed", 20.0, 0.80),  # beats torch: as accurate, faster
    row("onnxruntime", "int8", "passed", 10.0, 0.78),
    row("openvino", "int8", "passed", 12.0, 0.77),  # slower and less accurate than ORT int8
    row("tflite", "int8", "passed", 10.0, 0.78),  # ties ORT int8 exactly: both stay
    row("ncnn", "int8", "failed", 5.0, 0.90, reason="score cosine 0.1 < 0.95"),  # never on the front
    row("ncnn", "fp32", "unverified", 4.0, 0.95),
    row("openvino", "bf16", "skipped", None, None),
]


def test_pareto_front_keeps_only_undominated_shipped_rows():
    front = {(r["target"], r["precision"]) for r in pareto_front(RECORDS)}
    assert front == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "int8")}


def test_table_has_a_row_per_record_with_its_status():
    console = Console(record=True, width=200)
    console.print(results_table(RECORDS, "run"))
    text = console.export_text()
    assert len(results_table(RECORDS, "run").rows) == len(RECORDS)
    for status in ("reference", "passed", "failed", "unverified", "skipped"):
        assert status in text


def test_written_files_hold_every_record(tmp_path):
    info = {"name": "t", "config_hash": "abc", "device": {"name": "local"}, "versions": {"edgeopt": "0"}}
    write_results(tmp_path, info, RECORDS)
    assert json.loads((tmp_path / "results.json").read_text())["records"] == RECORDS
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["target"] for r in rows] == [r["target"] for r in RECORDS] and list(rows[0]) == list(COLUMNS)
    report = (tmp_path / "report.md").read_text()
    assert "Pareto front: onnxruntime fp32 (local), onnxruntime int8 (local), tflite int8 (local)" in report
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert report.count("\n| ") == len(RECORDS) + 1  # header and one line per record


def test_the_int8_search_steps_are_reported_with_their_chart(tmp_path):
    steps = [{"step": "the plan as configured", "kept_float": 0, "drop_points": 7.6, "parity": "passed",
              "seconds": 9.0},
             {"step": "the decode kept float", "kept_float": 24, "drop_points": 0.3, "parity": "passed",
              "seconds": 8.0}]
    searched = row("onnxruntime", "int8", "passed", 10.0, 0.78,
                   accuracy_search={"max_drop_points": 0.5, "met": True, "steps": steps})
    info = {"name": "t", "config_hash": "abc", "device": {"name": "local"}, "versions": {"edgeopt": "0"}}
    write_results(tmp_path, info, [*RECORDS, searched])
    report = (tmp_path / "report.md").read_text()
    assert "## INT8 accuracy search" in report
    assert "| onnxruntime | int8 | the plan as configured | 0 | 7.60 | passed | 9.0 |" in report
    assert "| onnxruntime | int8 | the decode kept float | 24 | 0.30 | passed | 8.0 |" in report
    assert (tmp_path / "int8_search.png").stat().st_size > 1000


def test_no_search_no_search_section(tmp_path):
    info = {"name": "t", "config_hash": "abc", "device": {"name": "local"}, "versions": {"edgeopt": "0"}}
    write_results(tmp_path, info, RECORDS)
    assert "INT8 accuracy search" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "int8_search.png").exists()
