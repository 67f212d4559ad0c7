"""Commands built on everything else: ``depth-bench`` (latency, FLOPs, fidelity), ``depth-sweep``
(models x quantization), the ``make demo`` driver and the export, quantize and weights commands.
The top layer: may import every other subpackage; nothing imports it."""
