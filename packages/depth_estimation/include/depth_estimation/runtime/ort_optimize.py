"""ONNX Runtime's transformer fusions for an exported model: the ``onnxruntime`` export target.

:func:`optimize_for_onnxruntime` runs ONNX Runtime's own transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``, model type ``vit``) on an export at opset
17: attention becomes one ``MultiHeadAttention`` contrib operator per layer (:data:`ATTENTION_OP`;
its CPU kernel is a flash attention that never holds the [heads, N, N] scores, CUDA has fused
kernels too), residual + LayerNorm ``SkipLayerNormalization``, bias + GELU ``BiasGelu``. These
operators run on ONNX Runtime's CPU and CUDA execution providers, and nowhere else (not in
TensorRT 7.1: the ``tensorrt`` target stays opset 11 without them).

Three exact rewrites come first, without which DINOv2 (the Depth-Anything-V2 backbone) matches
none of the optimizer's attention patterns; each leaves the numbers as they were (up to float
rounding):

* :func:`fold_layer_scale`: DINOv2's LayerScale ``(x W + b) * g`` becomes ``x (W g) + b g``;
* :func:`drop_noop_reshapes`: a Reshape to the shape its input already has (transformers' SDPA
  path reshapes its output so) is removed, and ``-1`` in the remaining attention reshapes does
  not matter;
* :func:`split_shared_residuals`: a residual sum read by more than one LayerNormalization (the
  backbone's output norms at ``out_indices``) gets one Add per extra norm, so that each norm has
  its own input and the optimizer finds the attention input.

Imports onnx and ONNX Runtime only when called.
"""
from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional

# what ONNX Runtime's transformer optimizer makes (counted in the result)
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu",
             "FastGelu", "Gelu")
MODEL_TYPE = "vit"  # a pre-LayerNorm encoder without attention mask: DINOv2
# MultiHeadAttention (Q, K, V from their own MatMuls; flash attention on the CPU) rather than
# Attention (QKV in one packed GEMM, then scores and softmax in full on the CPU): random:da2-small at
# 518 took 0.95x the CPU time of the plain opset-11 file with the first, 1.02x with the second, on
# one thread, interleaved (at 266 all within 3%); the README has the figures.
ATTENTION_OP = "MultiHeadAttention"
# 0: the optimizer's Python fusions only. Its level 1 (ONNX Runtime's basic optimizations first) turns
# MatMul + Add into Gemm and the fusions then find no attention; the session applies all of ONNX
# Runtime's own optimizations when it loads the file anyway (ORT_ENABLE_ALL in OrtRunner).
OPT_LEVEL = 0


def _producers(graph) -> Dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> Dict[str, List[Any]]:
    users: Dict[str, List[Any]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _constant(graph, name: str, producers: Dict[str, Any]):
    """The value of ``name`` when it is an initializer or a Constant (through Identity nodes), else None."""
    from onnx import numpy_helper  # optional: only exporting needs onnx

    node = producers.get(name)
    while node is not None and node.op_type == "Identity":
        name, node = node.input[0], producers.get(node.input[0])
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    if node is not None and node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _rename_input(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _linear_before(graph, mul, producers, consumers):
    """``(matmul, add, bias_index, weight, bias, scale)`` when ``mul`` is ``(x W + b) * g`` with W, b,
    g constants, g of W's output width, and the linear used by the Mul only; else None."""
    for a, b in (mul.input, mul.input[::-1]):
        scale, add = _constant(graph, b, producers), producers.get(a)
        if scale is not None and add is not None and add.op_type == "Add" and len(consumers[a]) == 1:
            break
    else:
        return None
    for bias_index in (0, 1):
        bias = _constant(graph, add.input[bias_index], producers)
        matmul = producers.get(add.input[1 - bias_index])
        if bias is not None and matmul is not None and matmul.op_type == "MatMul":
            break
    else:
        return None
    weight = _constant(graph, matmul.input[1], producers)
    if weight is None or len(consumers[matmul.output[0]]) != 1 or weight.ndim != 2 or scale.ndim != 1:
        return None
    if not scale.shape == bias.shape == (weight.shape[1],):
        return None
    return matmul, add, bias_index, weight, bias, scale


def fold_layer_scale(proto) -> int:
    """``(x W + b) * g`` (constant W, b and per-channel g) as ``x (W g) + b g``, in place; how many."""
    from onnx import numpy_helper  # optional: only exporting needs onnx

    graph = proto.graph
    producers, consumers = _producers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = 0
    for mul in [n for n in graph.node if n.op_type == "Mul" and n.output[0] not in outputs]:
        found = _linear_before(graph, mul, producers, consumers)
        if found is None:
            continue
        matmul, add, bias_index, weight, bias, scale = found
        # new initializers: W and b may be shared with other nodes (the exporter deduplicates equal values)
        weight_name, bias_name = matmul.name + "/layer_scale_weight", add.name + "/layer_scale_bias"
        graph.initializer.extend([numpy_helper.from_array((weight * scale).astype(weight.dtype), weight_name),
                                  numpy_helper.from_array((bias * scale).astype(bias.dtype), bias_name)])
        matmul.input[1], add.input[bias_index] = weight_name, bias_name
        _rename_input(graph, mul.output[0], add.output[0])
        graph.node.remove(mul)
        folded += 1
    if folded:
        _drop_unused(graph)
    return folded


def _drop_unused(graph) -> None:
    """Constant/Identity nodes and initializers nothing reads any more."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("Constant", "Identity") and not set(n.output) & used]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _static_shapes(proto) -> Dict[str, List[Optional[int]]]:
    """Each tensor's shape as far as ONNX's shape inference (with data propagation) knows it."""
    import onnx  # optional: only exporting needs it

    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None
                                 for d in info.type.tensor_type.shape.dim]
    return shapes


def drop_noop_reshapes(proto) -> int:
    """Reshapes that keep their input's shape removed, in place; how many. A Reshape is a no-op
    when its constant target has the input's rank and every entry is the known input size or 0
    (copy), except at most one ``-1``, which is then that dimension's size."""
    graph = proto.graph
    shapes, producers = _static_shapes(proto), _producers(graph)
    outputs = {o.name for o in graph.output}
    dropped = 0
    for node in [n for n in graph.node if n.op_type == "Reshape" and n.output[0] not in outputs]:
        have, target = shapes.get(node.input[0]), _constant(graph, node.input[1], producers)
        if have is None or target is None or target.ndim != 1 or len(target) != len(have):
            continue
        free = [i for i, (h, t) in enumerate(zip(have, target.tolist())) if h is None or t not in (h, 0)]
        if len(free) > 1 or (free and int(target[free[0]]) != -1):
            continue
        _rename_input(graph, node.output[0], node.input[0])
        graph.node.remove(node)
        dropped += 1
    if dropped:
        _drop_unused(graph)
    return dropped


def split_shared_residuals(proto) -> int:
    """An Add read by several LayerNormalization nodes: every such norm after the first reads its
    own copy of the Add, in place; how many copies."""
    import onnx  # optional: only exporting needs it

    graph = proto.graph
    consumers = _consumers(graph)
    copies = 0
    for node in [n for n in graph.node if n.op_type == "Add"]:
        norms = [c for c in consumers[node.output[0]] if c.op_type == "LayerNormalization"]
        for k, norm in enumerate(norms[1:], 1):
            name = "%s/copy%d" % (node.output[0], k)
            copy = onnx.helper.make_node("Add", list(node.input), [name], name="%s/copy%d" % (node.name, k))
            graph.node.insert(list(graph.node).index(node) + 1, copy)
            norm.input[0] = name
            copies += 1
    return copies


def op_counts(proto) -> Dict[str, int]:
    """How many nodes of each operator type ``proto``'s graph has."""
    return dict(collections.Counter(n.op_type for n in proto.graph.node))


def fused_op_counts(proto) -> Dict[str, int]:
    """The :data:`FUSED_OPS` in ``proto`` with their counts (those present only)."""
    counts = op_counts(proto)
    return {op: counts[op] for op in FUSED_OPS if counts.get(op)}


def optimize_for_onnxruntime(src: str, dst: str, num_heads: int = 0, hidden_size: int = 0,
                             attention: str = ATTENTION_OP) -> Dict[str, Any]:
    """ONNX Runtime's transformer optimizer on the ONNX file ``src`` (after the rewrites of the module
    doc), written to ``dst``. ``num_heads``/``hidden_size``: the attention's (:func:`attention_dims`);
    0 = a network without attention (the student): only the rewrites, no optimizer. ``attention``:
    ``"MultiHeadAttention"`` or ``"Attention"``, the operator attention becomes.

    Returns ``{"rewrites": {"layer_scale", "noop_reshape", "residual_copy"}, "fused_ops": {op: n}}``."""
    import onnx  # optional: only exporting needs it
    from onnxruntime.transformers import optimizer  # optional: only this target needs it
    from onnxruntime.transformers.fusion_options import FusionOptions

    proto = onnx.load(src)
    rewrites = {"layer_scale": fold_layer_scale(proto), "noop_reshape": drop_noop_reshapes(proto),
                "residual_copy": split_shared_residuals(proto)}
    if num_heads <= 0 or hidden_size <= 0:  # no attention (a conv net): nothing for the optimizer to fuse
        onnx.save(proto, dst)
        return {"rewrites": rewrites, "fused_ops": fused_op_counts(proto)}
    options = FusionOptions(MODEL_TYPE)
    options.use_multi_head_attention = attention == "MultiHeadAttention"
    model = optimizer.optimize_model(proto, model_type=MODEL_TYPE, num_heads=int(num_heads),
                                     hidden_size=int(hidden_size), opt_level=OPT_LEVEL, use_gpu=False,
                                     optimization_options=options)
    model.save_model_to_file(dst)
    return {"rewrites": rewrites, "fused_ops": fused_op_counts(model.model)}


def attention_dims(model) -> Dict[str, int]:
    """``{"num_heads", "hidden_size"}`` of the first module of ``model`` whose config has them (the
    DINOv2 backbone of Depth-Anything-V2); zeros when none does (a conv net)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        config = getattr(config, "backbone_config", None) or config
        heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
        if isinstance(heads, int) and isinstance(hidden, int):
            return {"num_heads": heads, "hidden_size": hidden}
    return {"num_heads": 0, "hidden_size": 0}
