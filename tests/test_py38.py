"""The Duckietown images run Python 3.8 with older pins: check the syntax and re-run the core tests
against transformers==4.46.3 (installed by `make setup` into .build/py38-pins)."""
import os
import subprocess
import sys

import pytest

from conftest import INCLUDE, ROOT

PINS = os.path.join(ROOT, ".build", "py38-pins")
CORE_TESTS = ["tests/test_models.py", "tests/test_core.py", "tests/test_convert.py", "tests/test_pipeline.py"]


def test_package_is_valid_python_38():
    pkg = os.path.join(ROOT, "packages", "depth_estimation")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "vermin"), "-t=3.8-", "--no-tips", "--violations",
                           "--eval-annotations", pkg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(os.environ.get("DEPTH_EXPECT_TRANSFORMERS") is not None, reason="already the pinned run")
def test_core_tests_pass_with_the_image_pins():
    assert os.path.isdir(PINS), "run `make setup` to install the image pins into %s" % PINS
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PINS, INCLUDE, os.environ.get("PYTHONPATH", "")]),
               DEPTH_EXPECT_TRANSFORMERS="4.46.3")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + CORE_TESTS,
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout.splitlines()[-1] and "skipped" not in proc.stdout.splitlines()[-1]
