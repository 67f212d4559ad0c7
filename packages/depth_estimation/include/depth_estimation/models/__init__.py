"""Model specs and networks: the spec grammar (``da2-small``, ``random:<arch>``, folders, ``.pth``,
``.onnx``, ``@hqqN``), Depth-Anything-V2 configurations and loading (transformers), the authors'
original checkpoints, the FastDepth student, HQQ quantization and released weights in the Hugging
Face cache. ``specs`` imports no torch; the networks do. May import :mod:`depth_estimation.io`."""
