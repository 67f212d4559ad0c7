"""The Duckietown images run Python 3.8 with older pins: the core tests run on a real Python 3.8 with
the image's dependency file (`make setup` builds .build/py38-venv when a Python 3.8 exists here),
the syntax is checked for 3.8, and the core tests run once more on this Python against
transformers==4.46.3 (.build/py38-pins)."""
import os
import subprocess
import sys

import pytest

from conftest import INCLUDE, ROOT

PINS = os.path.join(ROOT, ".build", "py38-pins")
PY38 = os.path.join(ROOT, ".build", "py38-venv", "bin", "python")
CORE_TESTS = ["tests/test_models.py", "tests/test_core.py", "tests/test_convert.py", "tests/test_pipeline.py",
              "tests/test_stream.py", "tests/test_metric_outputs.py", "tests/test_calibration.py",
              "tests/test_ground_metric.py"]


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


NO_PY38 = ("no Python 3.8 on this machine (`make setup` builds .build/py38-venv from dependencies-py3.txt "
           "when one exists): the image's Python was not run")


@pytest.mark.skipif(not os.path.exists(PY38), reason=NO_PY38)
def test_core_tests_pass_on_python_38_with_the_image_dependencies():
    probe = subprocess.run([PY38, "-c", "import sys, torch, transformers, numpy; print(sys.version_info[:2], "
                            "torch.__version__, transformers.__version__, numpy.__version__)"],
                           stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert probe.startswith("(3, 8) 2.4.1") and " 4.46.3 1.24." in probe, probe
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([INCLUDE, os.path.join(ROOT, "tests")]))
    env.pop("DEPTH_EXPECT_TRANSFORMERS", None)
    proc = subprocess.run([PY38, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + CORE_TESTS, cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    last = proc.stdout.splitlines()[-1]
    assert " passed" in last and "skipped" not in last and "failed" not in last, last
