"""``depth-distill``: from a folder of images (or a robot's bags) to a student on the robot.

    depth-distill label --teacher da2-small --images ~/photos --cache cache/   # the teacher labels
    depth-distill train --cache cache/ --out runs/student1 --steps 20000       # the student learns
    depth-distill label --teacher ground-truth --bags 'sim/train/*.bag' --cache gt/  # RGB-D ground truth
    depth-distill train --cache cache/ gt/ --out runs/mix                      # both label sources
    depth-distill average --students runs/a/student runs/b/student --out runs/ab  # weights averaged
    roslaunch depth_estimation depth_node.launch model:=runs/student1/student input_size:=0

``label`` caches the teacher's relative inverse depth per image (fp16, keyed by content hash;
resumable; ``--shard i/n`` splits the work), or with ``--teacher ground-truth`` the inverse of
the depth in RGB-D bags (``depth-sim2bag``, ``depth-rgbd2bag``, ``depth-nyu2bag``; 0 = masked).
``train`` fits the FastDepth student (``fastdepth-mnv3``) to the cached labels of one cache or
several (a mix); run it under ``torchrun`` for several GPUs or nodes.
"""
from __future__ import annotations

import argparse
import sys

from depth_estimation.distill import average, labels, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="depth-distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    labels.add_label_arguments(commands.add_parser("label", help="label images with a teacher or with "
                                                   "the ground truth of RGB-D bags (cached)"))
    train.add_train_arguments(commands.add_parser("train", help="train the student on cached labels"))
    average.add_average_arguments(commands.add_parser("average", help="average the weights of several "
                                                      "students (fine-tunes of one student)"))
    args = parser.parse_args(argv)
    run = {"label": labels.run_label, "train": train.run_train, "average": average.run_average}
    return run[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
