"""``python3 -m depth_estimation.distill`` (also ``torchrun -m depth_estimation.distill``) =
``depth-distill``."""
import sys

from depth_estimation.distill.cli import main

if __name__ == "__main__":
    sys.exit(main())
