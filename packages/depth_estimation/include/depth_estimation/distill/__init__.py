"""Distillation of the FastDepth student (``depth-distill``). May import the runtime, the frame
path and below (RGB-D bags through :mod:`depth_estimation.io.rgbd`); never evaluation or the tools.

* :mod:`.sources` - the unlabeled items: image folders and ROS 1 bags, in a fixed order;
* :mod:`.label_cache` - the label cache on disk (layout, readers, atomic writers);
* :mod:`.labels` - the teacher's labelling run (``depth-distill label``, sharded, resumable);
* :mod:`.ground_truth` - the ground truth of RGB-D bags as labels (``--teacher ground-truth``);
* :mod:`.losses` - the MiDaS scale-and-shift-invariant and gradient-matching losses;
* :mod:`.data` - the augmented dataset of the cache, its split and step sampler;
* :mod:`.checkpoints` - pickle-free training checkpoints;
* :mod:`.train` - the training loop (``depth-distill train``, torchrun-ready);
* :mod:`.cli` - the ``depth-distill`` command.
"""
