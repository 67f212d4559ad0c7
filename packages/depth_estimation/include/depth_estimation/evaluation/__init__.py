"""Offline evaluation: metrics (AbsRel ... delta3, crops, alignment), per-frame scoring shared with
the evaluator node, ``depth-eval`` on bags, ``depth-da2k`` point pairs, and the converters that
turn NYUv2 and RGB-D folders into bags. May import the runtime, the frame path and below; never
the tools or distillation."""
