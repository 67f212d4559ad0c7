"""make demo's speed line: the node's output against the model alone, and against the camera when the
camera is the slower one (the student on a 30 Hz stream: output / alone 0.17 would read as a node that
loses time, while it answers every frame)."""
from depth_estimation.tools import demo_speed

BARE = {"bare_hz": 174.0, "bare_ms_p50": 5.5, "backend": "onnxruntime", "input_size": 192}


def _report(input_hz, output_hz):
    return {"diagnostics": {"input_hz": input_hz, "output_hz": output_hz}}


def test_a_camera_slower_than_the_model_is_named_with_output_over_input():
    report = _report("29.84", "29.96")
    demo_speed.add_to_report(report, BARE)
    assert report["output_vs_bare"] == round(29.96 / 174.0, 2) and report["camera_limited"]
    assert report["output_vs_input"] == round(29.96 / 29.84, 2)
    _name, text = demo_speed.table_row(report)
    assert "output / alone = 0.17" in text and "camera is slower than the model: output / input = 1.0" in text


def test_a_model_slower_than_the_camera_is_judged_against_the_model_alone():
    report = _report("29.9", "0.74")
    demo_speed.add_to_report(report, dict(BARE, bare_hz=0.47))
    assert report["output_vs_bare"] == round(0.74 / 0.47, 2) and not report["camera_limited"]
    _name, text = demo_speed.table_row(report)
    assert "output / alone = 1.57" in text and "camera" not in text


def test_missing_rates_give_no_ratio():
    report = _report("nan", None)
    demo_speed.add_to_report(report, BARE)
    assert report["output_vs_bare"] is None and report["output_vs_input"] is None and not report["camera_limited"]
