"""depth-distill end to end: a folder of images -> teacher labels -> a student folder the node loads."""
import os

import cv2
import numpy as np

from depth_estimation.distill import cli as distill
from depth_estimation.models import loading
from depth_estimation.models.specs import parse_spec
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.onnx_export import export_onnx


def test_folder_to_student(tiny_dir, tmp_path, tum_rgb):
    images = tmp_path / "images" / "sub"
    images.mkdir(parents=True)
    for i in range(4):  # real content, different crops (distinct content hashes)
        crop = tum_rgb[i * 20:i * 20 + 192, i * 30:i * 30 + 256]
        cv2.imwrite(str(images / ("%d.jpg" % i)), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = ["label", "--teacher", tiny_dir, "--images", str(tmp_path / "images"), "--cache", str(cache),
            "--input-size", "56", "--no-progress"]
    assert distill.main(args) == 0
    npys = sorted(cache.rglob("*.npy"))
    assert len(npys) == 4
    assert distill.main(args) == 0  # resumable: nothing labelled twice
    assert sorted(cache.rglob("*.npy")) == npys
    assert distill.main(["train", "--cache", str(cache), "--out", str(out), "--steps", "3",
                         "--batch-size", "2", "--size", "64x96", "--no-progress"]) == 0
    assert (out / "history.json").exists()
    spec = parse_spec(str(out / "student"))
    assert spec.kind == "student_dir" and spec.family == "fastdepth"
    depth = DepthEstimator(str(out / "student"), input_size=None).load().infer(tum_rgb)
    assert depth.shape == tum_rgb.shape[:2] and np.isfinite(depth).all()
    assert not [f for f in os.listdir(out / "checkpoint") if f.endswith((".pt", ".pth", ".pkl", ".bin"))]
    result = export_onnx(loading.load_net(spec), 192, 256, str(tmp_path / "student.onnx"))
    assert result["opset"] <= 13 and result["rel_diff"] < 1e-3  # exportable like the other variants
    onnx_depth = DepthEstimator(str(tmp_path / "student.onnx"), backend="onnxruntime").load().infer(tum_rgb)
    assert onnx_depth.shape == tum_rgb.shape[:2]
