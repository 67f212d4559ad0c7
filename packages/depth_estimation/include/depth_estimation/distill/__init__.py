"""Distillation of the FastDepth student: teacher labels cached by content hash, the losses,
the augmented dataset, checkpoints and the training loop (``depth-distill``). May import the
runtime, the frame path and below; never evaluation or the tools."""
