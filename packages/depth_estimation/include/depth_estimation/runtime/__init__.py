"""Inference: preprocessing, the :class:`~depth_estimation.runtime.estimator.DepthEstimator`
(``load()`` / ``infer()``), stage timers, and one runner per backend behind one interface
(:mod:`.runners`, which imports without torch): :mod:`.torch_runner`, :mod:`.ort_runner` and
:mod:`.tensorrt_runner` (the last two import without torch too; TensorRT engines are built by
:mod:`.tensorrt_build` and cached by :mod:`.engine_cache`; :mod:`.jetson_check` is the robot image's
build-time check of numpy against PyCUDA), the ONNX export they run (:mod:`.onnx_export`) and the
process's memory for diagnostics (:mod:`.memory`). May import :mod:`depth_estimation.models`,
:mod:`depth_estimation.io` and :mod:`depth_estimation.options`; never the frame path, evaluation,
distillation or tools."""
