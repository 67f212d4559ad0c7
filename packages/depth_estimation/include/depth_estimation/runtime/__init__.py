"""Inference: preprocessing, the :class:`~depth_estimation.runtime.estimator.DepthEstimator`
(``load()`` / ``infer()``), one runner per backend (torch, ONNX Runtime, TensorRT), the ONNX
export and stage timers. May import :mod:`depth_estimation.models` and :mod:`depth_estimation.io`;
never the frame path, evaluation, distillation or tools."""
