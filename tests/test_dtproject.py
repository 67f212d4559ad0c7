"""Static checks of the Duckietown project files (template-ros v3, daffy): the things that
`dts devel build` / `dts devel run` rely on and that break silently or late (in a Docker build
on the robot). Needs no ROS, Docker or torch."""
import ast
import fnmatch
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ROOT / "launchers"
# catkin_pkg's own test (package.py): catkin refuses a package.xml whose email fails it.
EMAIL = re.compile(r"^[-a-zA-Z0-9_%+]+(\.[-a-zA-Z0-9_%+]+)*@[-a-zA-Z0-9%]+(\.[-a-zA-Z0-9%]+)*\.[a-zA-Z]{2,}$")
V3_ARGS = {"ARCH": None, "DISTRO": "daffy", "DOCKER_REGISTRY": "docker.io", "BASE_IMAGE": "dt-ros-commons",
           "BASE_TAG": "${DISTRO}-${ARCH}", "LAUNCHER": "default"}
PROJECT_ARGS = {"REPO_NAME", "DESCRIPTION", "MAINTAINER", "ICON"}
ML_BASE = "dt-machine-learning-base-environment"  # daffy, arm64v8: TensorRT 7.1.3 + PyCUDA, Python 3.8
# per ARCH: the dependency file the image installs
ARCH_DEPS = {"amd64": "dependencies-py3.txt", "arm64v8": "dependencies-py3.arm64v8.txt"}
# what the arm64v8 image must not install (torch has no CUDA on aarch64 PyPI; the export is off the robot)
NOT_ON_THE_ROBOT = {"torch", "torchvision", "transformers", "tokenizers", "huggingface-hub", "safetensors",
                    "hqq", "onnx", "onnxruntime", "onnxruntime-gpu", "accelerate", "timm"}
# provided by the arm64v8 base image itself (dt-machine-learning-base-environment, daffy)
ML_BASE_MODULES = {"tensorrt", "pycuda", "numpy"}
BASE_IMAGE_ENV = {"CATKIN_WS_DIR", "LAUNCH_DIR", "ROS_DISTRO"}  # set by dt-base-environment / dt-ros-commons
# import name -> PyPI name, where they differ
IMPORT_TO_DIST = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
                  "duckietown_world": "duckietown-world-daffy"}
# provided by the ROS install of the base image along with rospy
ROS_CORE_MODULES = {"rospy", "rosgraph", "rospkg", "roslib", "genpy", "catkin_pkg"}
NEWER_THAN_PY38 = {"zoneinfo", "graphlib", "tomllib"}  # the image runs Python 3.8


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- parsing helpers
def dockerfile():
    """[(KEYWORD, arguments)], comment lines dropped and line continuations joined."""
    lines = [ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in joined.splitlines() if ln.strip()]


def args_of(instructions):
    out = {}
    for _, rest in (i for i in instructions if i[0] == "ARG"):
        name, _, default = rest.partition("=")
        out[name] = default.strip('"') if default else None
    return out


def split_at_from():
    """(before the final stage's FROM, that FROM, the final stage)."""
    ins = dockerfile()
    k = max(i for i, (kw, _) in enumerate(ins) if kw == "FROM")
    return ins[:k], ins[k], ins[k + 1:]


def stages():
    """{stage name: image} of every FROM ... AS name."""
    out = {}
    for kw, rest in dockerfile():
        m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.I) if kw == "FROM" else None
        if m:
            out[m.group(2)] = m.group(1)
    return out


def copy_sources():
    """Build-context paths the Dockerfile COPYs (relative, './' and trailing '/.' stripped)."""
    out = []
    for kw, rest in dockerfile():
        if kw == "COPY" and "--from" not in rest:
            out += [re.sub(r"^\./|/\.?$", "", s) for s in shlex.split(rest)[:-1]]
    return out


def dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(rel):
    """Docker's rule, simplified: the last pattern matching the path or one of its parents wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    out = False
    for pat in dockerignore_patterns():
        if any(fnmatch.fnmatchcase(p, pat.lstrip("!")) for p in prefixes):
            out = not pat.startswith("!")
    return out


def catkin_packages():
    """{package name: package directory}"""
    return {ET.parse(x).getroot().findtext("name"): x.parent for x in ROOT.glob("packages/*/package.xml")}


def requirements(name="dependencies-py3.txt"):
    """{normalized name: version specifier} of a dependency file (default: the amd64 one)."""
    out = {}
    for ln in (ROOT / name).read_text().splitlines():
        ln = ln.split("#")[0].strip()
        if ln:
            name, spec = re.match(r"([A-Za-z0-9._-]+)(?:\[.*\])?\s*(.*)", ln).groups()
            out[norm(name)] = spec.replace(" ", "")
    return out


def launcher_script(path, seen=()):
    """Text of a launcher; one that just `exec dt-launcher-X` is followed to launchers/X.*"""
    text = path.read_text()
    m = re.search(r"^\s*exec\s+dt-launcher-([\w-]+)", text, re.M)
    if not m:
        return text
    target = [p for p in LAUNCHERS.iterdir() if p.stem == m.group(1)]
    assert target and path not in seen, f"{path.name} delegates to missing/cyclic dt-launcher-{m.group(1)}"
    return launcher_script(target[0], seen + (path,))


def roslaunch_call(text):
    """(package, launch file, {arg: value}) of the `dt-exec roslaunch` line."""
    line = next(ln for ln in re.sub(r"\\\n", " ", text).splitlines() if re.match(r"\s*dt-exec\s+roslaunch\b", ln))
    words = shlex.split(line)[2:]
    positional = [w for w in words if not w.startswith("-") and ":=" not in w]
    return positional[0], positional[1], dict(w.split(":=", 1) for w in words if ":=" in w)


# ---------------------------------------------------------------- Dockerfile
ROBOT_BUILD = "-A BASE_IMAGE %s" % ML_BASE  # dts devel build's build argument for the Jetson


def test_dockerfile_has_the_v3_args_and_one_base_chosen_by_a_build_argument():
    """One FROM: dts builds with docker-py's classic builder, which processes (and pulls) every stage
    of a multi-stage file, so per-ARCH stages would pull the ML base on the laptop and dt-ros-commons
    on the robot. The base is BASE_IMAGE (dt-ros-commons); the robot's build passes the ML base with
    `-A BASE_IMAGE ...`, as the Dockerfile, the README and the arm64v8 build check say."""
    before, (_, base), after = split_at_from()
    declared = args_of(before)
    assert set(declared) == set(V3_ARGS) | PROJECT_ARGS
    assert {k: declared[k] for k in V3_ARGS} == V3_ARGS
    assert [kw for kw, _ in dockerfile()].count("FROM") == 1 and stages() == {}
    assert base == "${DOCKER_REGISTRY}/duckietown/${BASE_IMAGE}:${BASE_TAG}"
    assert ROBOT_BUILD in (ROOT / "Dockerfile").read_text()
    assert "dts devel build -f -H ROBOT " + ROBOT_BUILD in (ROOT / "README.md").read_text()
    robot_check, _laptop = arch_branches(r"find_spec\('torch'\)")
    assert ROBOT_BUILD in robot_check  # an arm64v8 build on the wrong base stops, naming the argument
    labels = " ".join(rest for kw, rest in after if kw == "LABEL")
    assert 'org.duckietown.label.base.image="${BASE_IMAGE}"' in labels


def test_dockerfile_placeholders_are_filled():
    declared = args_of(split_at_from()[0])
    for key in ("REPO_NAME", "DESCRIPTION", "MAINTAINER"):
        assert declared[key] and not re.search(r"[<>]|_HERE\b", declared[key]), f"{key} is still a placeholder"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", declared["REPO_NAME"])  # an image / container name
    m = re.fullmatch(r"[^()]+ \(([^()]+)\)", declared["MAINTAINER"])
    assert m and EMAIL.match(m.group(1)), "MAINTAINER must read 'Full Name (email)'"


def test_variables_used_after_from_are_in_scope():
    """ARGs from before FROM are empty after it unless recalled: a forgotten recall gives empty paths."""
    known = set(BASE_IMAGE_ENV)
    for kw, rest in split_at_from()[2]:
        if kw != "CMD":  # CMD expands at run time, in the container; lower case: shell variables
            missing = {v for v in re.findall(r"\$\{?(\w+)", rest) if not v.islower()} - known
            assert not missing, f"{kw} {rest[:50]}...: {missing} not declared (after FROM) before this line"
        if kw in ("ARG", "ENV"):
            known |= set(re.findall(r"(?:^|\s)(\w+)(?==|$)", rest))


def test_copy_sources_exist_and_are_in_the_build_context():
    for src in copy_sources():
        matches = sorted(ROOT.glob(src))
        assert matches, f"COPY ./{src}: nothing in the repo matches"
        for m in matches:
            files = [m] if m.is_file() else [f for f in m.rglob("*") if f.is_file()]
            # git keeps no empty directory: a fresh clone would lack it and `COPY` would fail
            assert files, f"COPY ./{src}: {m.relative_to(ROOT)} has no files"
            assert any(not ignored(f.relative_to(ROOT).as_posix()) for f in files), f"./{src} is .dockerignored"


def test_dockerignore_reallows_only_what_is_copied():
    patterns = dockerignore_patterns()
    assert patterns[0] == "**", ".dockerignore should start by ignoring everything"
    copied = {s.split("/")[0] for s in copy_sources()}
    for pat in (p[1:] for p in patterns if p.startswith("!")):
        allowed = {p.name for p in ROOT.iterdir() if fnmatch.fnmatchcase(p.name, pat)}
        assert allowed and allowed <= {p.name for src in copied for p in ROOT.glob(src)}, f"!{pat}"


def test_weights_cli_baked_in_at_build_time_exists():
    runs = [r for kw, r in dockerfile() if kw == "RUN" and re.search(r"python3 -m \S+ fetch", r)]
    assert runs, "the Dockerfile no longer fetches the default model's weights"
    path = re.search(r"PYTHONPATH=\$\{REPO_PATH\}/(\S+)", runs[0]).group(1)
    module = re.search(r"python3 -m (\S+) fetch", runs[0]).group(1)
    source = ROOT / path / (module.replace(".", "/") + ".py")
    assert source.is_file(), f"python3 -m {module}: {source.relative_to(ROOT)} does not exist"
    text = source.read_text()
    assert re.search(r"__name__\s*==\s*['\"]__main__['\"]", text), f"{module} does nothing under python -m"
    assert re.search(r"['\"]fetch['\"]", text), f"{module} has no 'fetch' command"


# ---------------------------------------------------------------- launchers
LAUNCHER_FILES = sorted(LAUNCHERS.iterdir()) if LAUNCHERS.is_dir() else []


def test_default_launcher_exists():
    assert (LAUNCHERS / "default.sh").is_file(), "the image's CMD runs dt-launcher-default"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=lambda p: p.name)
def test_launcher_shape(path):
    assert path.stat().st_mode & 0o111, f"{path.name} is not executable"
    assert path.read_text().startswith("#!"), f"{path.name} has no shebang"
    text = launcher_script(path)
    steps = ["source /environment.sh", "dt-launchfile-init", "dt-exec", "dt-launchfile-join"]
    where = [text.find(s) for s in steps]
    assert -1 not in where and where == sorted(where), f"{path.name}: expected, in order, {steps}"


ROS_LAUNCHERS = [p for p in LAUNCHER_FILES if re.search(r"^\s*dt-exec\s+roslaunch\b", launcher_script(p), re.M)]


def test_launchers_without_roslaunch_run_a_library_tool():
    """build-engine.sh (the one-shot TensorRT build) runs a tool of the library, which exists."""
    others = [p for p in LAUNCHER_FILES if p not in ROS_LAUNCHERS]
    assert [p.name for p in others] == ["build-engine.sh"]
    for path in others:
        module = re.search(r"dt-exec python3 -m ([\w.]+)", launcher_script(path)).group(1)
        assert (ROOT / "packages/depth_estimation/include" / (module.replace(".", "/") + ".py")).is_file()


@pytest.mark.parametrize("path", ROS_LAUNCHERS, ids=lambda p: p.name)
def test_launcher_roslaunch_matches_the_launch_file(path):
    pkg, launch, passed = roslaunch_call(launcher_script(path))
    packages = catkin_packages()
    assert pkg in packages, f"no catkin package {pkg!r} in packages/*/package.xml"
    launch_file = packages[pkg] / "launch" / launch
    assert launch_file.is_file(), f"{launch_file.relative_to(ROOT)} does not exist"
    args = ET.parse(launch_file).getroot().findall("arg")
    declared = {a.get("name") for a in args}
    required = {a.get("name") for a in args if a.get("default") is None and a.get("value") is None}
    assert "veh" in passed and "veh" in declared
    assert set(passed) <= declared, f"not declared in {launch}: {set(passed) - declared}"
    assert required <= set(passed), f"required by {launch} but not passed: {required - set(passed)}"


def arch_branches(pattern):
    """(arm64v8 text, other text) of the `if [ "${ARCH}" = "arm64v8" ]; then A; else B; fi` RUN whose
    text matches ``pattern``."""
    run = next(r for kw, r in dockerfile() if kw == "RUN" and re.search(pattern, r))
    m = re.search(r'if \[ "\$\{ARCH\}" = "arm64v8" \]; then (.*?);\s*else\b(.*);\s*fi\b', run, re.S)
    assert m, f"no per-ARCH branch in RUN {run[:60]}..."
    return m.group(1), m.group(2)


def test_launcher_defaults_are_what_the_image_bakes_in():
    """The launcher's fallbacks are the files the Dockerfile writes: the fetched DEFAULT_MODEL with auto
    (amd64) or the laptop's ONNX export with TensorRT (arm64v8), so the robot needs nothing it lacks."""
    robot, laptop = arch_branches(r"/opt/depth_estimation/default_model")
    final = args_of(split_at_from()[2])
    assert final["DEFAULT_MODEL"] and final["ROBOT_ONNX"] == "assets/robot/default.onnx"
    assert 'echo "${DEFAULT_MODEL}" > /opt/depth_estimation/default_model' in laptop
    assert "echo auto > /opt/depth_estimation/default_backend" in laptop
    assert re.search(r"python3 -m \S+ fetch", laptop) and "fetch" not in robot
    assert 'echo "${REPO_PATH}/${ROBOT_ONNX}" > /opt/depth_estimation/default_model' in robot
    assert "echo tensorrt > /opt/depth_estimation/default_backend" in robot
    # a missing export stops the build with the command; one TensorRT 7.1 cannot read is refused
    assert 'test -f "${REPO_PATH}/${ROBOT_ONNX}"' in robot and "python3 -m depth_estimation.export" in robot
    assert "r['opset'] > 11 or r['tensorrt_issues']" in robot
    assert any(src == "assets" for src in copy_sources()), "the image must copy assets/ (the ONNX file)"
    script = launcher_script(LAUNCHERS / "default.sh")
    _pkg, _launch, passed = roslaunch_call(script)
    assert passed["model"] == "${DEPTH_MODEL:-$(cat $DEFAULTS/default_model)}"  # shlex drops the quotes
    assert passed["backend"] == "${DEPTH_BACKEND:-$(cat $DEFAULTS/default_backend)}"
    assert "DEFAULTS=/opt/depth_estimation" in script


def test_the_onnx_file_is_stored_once():
    """COPY ./assets puts the ONNX file (~100 MB for da2-small) in the image; nothing copies it again."""
    runs = " ".join(rest for kw, rest in dockerfile() if kw == "RUN")
    assert not re.search(r"\b(cp|mv|install|rsync)\b[^;&|]*(ROBOT_ONNX|\.onnx)", runs)
    assert [src for src in copy_sources() if src.startswith("assets")] == ["assets"]


def test_the_arm64v8_build_checks_numpy_against_tensorrt_and_pycuda():
    """numpy < 1.24 pinned for the robot, and the build runs PyCUDA's dtype registry with it
    (depth_estimation.runtime.jetson_check, whose range is the pin's)."""
    from depth_estimation.runtime.jetson_check import NUMPY_RANGE

    low, below = (".".join(map(str, v)) for v in NUMPY_RANGE)
    assert requirements(ARCH_DEPS["arm64v8"])["numpy"] == ">=%s,<%s" % (low, below)
    build = dockerfile()
    run = next(rest for kw, rest in build if kw == "RUN" and "jetson_check" in rest)
    assert re.fullmatch(r'if \[ "\$\{ARCH\}" = "arm64v8" \]; then\s+PYTHONPATH=\S+ '
                        r'python3 -m depth_estimation\.runtime\.jetson_check;\s+fi', run), run
    where = {kw + " " + rest[:40]: i for i, (kw, rest) in enumerate(build)}
    check = next(i for i, (kw, rest) in enumerate(build) if kw == "RUN" and "jetson_check" in rest)
    install = next(i for i, (kw, rest) in enumerate(build) if kw == "RUN" and "dt-pip3-install" in rest)
    packages = next(i for i, (kw, rest) in enumerate(build) if kw == "COPY" and "./packages" in rest)
    assert install < check and packages < check, where


def test_each_arch_installs_its_own_dependency_file():
    robot, laptop = arch_branches(r"dt-pip3-install")
    assert re.search(r'files="%s"' % re.escape(ARCH_DEPS["arm64v8"]), robot)
    assert re.search(r'files="%s dependencies-py3.dt.txt"' % re.escape(ARCH_DEPS["amd64"]), laptop)
    for name in ARCH_DEPS.values():
        assert (ROOT / name).is_file() and not ignored(name), name
    assert {norm(n) for n in requirements(ARCH_DEPS["arm64v8"])}.isdisjoint(NOT_ON_THE_ROBOT)
    assert {"torch", "transformers", "onnx", "hqq"} <= set(requirements(ARCH_DEPS["amd64"]))
    # the arm64v8 check: no torch at all, TensorRT and PyCUDA from the base image
    robot_check, laptop_check = arch_branches(r"find_spec\('torch'\)")
    assert "find_spec('torch') is None" in robot_check and "find_spec('tensorrt')" in robot_check
    assert "import cv2, numpy, torch, transformers" in laptop_check


# ---------------------------------------------------------------- Python dependencies
def test_arm64v8_node_path_imports_only_what_the_arm64v8_image_has(tmp_path):
    """The node's module-level imports, and every module the library path of an .onnx spec loads when
    it runs (tests/test_backends.py runs it with the robot's missing modules blocked), are the
    standard library, ROS, the base image's or dependencies-py3.arm64v8.txt's."""
    torch = pytest.importorskip("torch")  # only to make the stand-in ONNX file
    from depth_estimation.runtime.onnx_export import export_onnx
    from test_backends import _Channel0, run_robot_path

    provided = {norm(n) for n in requirements(ARCH_DEPS["arm64v8"])} | ML_BASE_MODULES | ROS_CORE_MODULES
    node = ROOT / "packages" / "depth_estimation" / "src" / "depth_node.py"
    top = [n for n in ast.parse(node.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
    msgs = {m for m in names if m.endswith(("_msgs", "_srvs"))}  # ROS messages, ros-noetic-* in the base
    missing = {m for m in names - msgs - {"depth_estimation"} - set(sys.stdlib_module_names)
               if norm(IMPORT_TO_DIST.get(m, m)) not in provided}
    assert not missing, f"depth_node.py imports {missing}, which the arm64v8 image lacks"

    path = str(tmp_path / "channel0.onnx")
    export_onnx(_Channel0(), 56, 112, path, check=False)
    proc = run_robot_path(path)
    assert proc.returncode == 0, proc.stdout
    loaded = set(proc.stdout.strip().splitlines()[-1].split()[1:])
    standin = set(_loaded_by("import onnxruntime, numpy, cv2, yaml").split())  # and what they load
    extra = {m for m in loaded - standin - {"depth_estimation"} - set(sys.stdlib_module_names)
             if not m.startswith("_") and norm(IMPORT_TO_DIST.get(m, m)) not in provided}
    assert not extra, f"the .onnx path loads {extra}, which the arm64v8 image lacks"
    del torch


def _loaded_by(code):
    import subprocess

    code += "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    return subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, universal_newlines=True,
                          check=True, timeout=60).stdout


def test_python38_pins():
    reqs = requirements()
    assert reqs.get("torch") == "==2.4.1"
    assert reqs.get("transformers") == "==4.46.3"
    upper = re.search(r"<([\d.]+)", reqs.get("numpy", ""))
    assert upper and tuple(map(int, upper.group(1).split("."))) <= (1, 25), "numpy needs a <1.25 bound (Py 3.8)"


def entry_points():
    """What the image runs: the nodes (packages/*/src/*.py) and the `python3 -m` build step."""
    files = sorted(ROOT.glob("packages/*/src/*.py"))
    for kw, rest in dockerfile():
        m = re.search(r"PYTHONPATH=\$\{REPO_PATH\}/(\S+)\s+python3 -m (\S+)", rest)
        if kw == "RUN" and m:
            files.append(ROOT / m.group(1) / (m.group(2).replace(".", "/") + ".py"))
    return [f for f in files if f.is_file()]


def runtime_imports(tree):
    """Import statements at any depth (lazy ones too), except optional ones: guarded by
    `try: ... except ImportError` or under `if TYPE_CHECKING:`."""
    def visit(node, optional):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not optional:
            yield node
        if isinstance(node, ast.Try):
            catches = " ".join(ast.unparse(h.type) if h.type else "Exception" for h in node.handlers)
            guarded = bool(re.search(r"\b(ImportError|ModuleNotFoundError|Exception)\b", catches))
            for child in node.body:
                yield from visit(child, optional or guarded)
            for child in node.handlers + node.orelse + node.finalbody:
                yield from visit(child, optional)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield from visit(child, optional)
        else:
            for child in ast.iter_child_nodes(node):
                yield from visit(child, optional)
    return visit(tree, False)


def imported_modules(entries):
    """{top-level module: file} that the entries import, following our own packages through
    include/ (whose own names are left out)."""
    includes = [d / "include" for d in catkin_packages().values()]
    own = {p.name for inc in includes for p in inc.iterdir() if p.is_dir()}

    def local(name):
        parts = name.split(".")
        for inc in includes:
            for cand in (inc.joinpath(*parts).with_suffix(".py"), inc.joinpath(*parts, "__init__.py")):
                if cand.is_file():
                    return [inc.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))] + [cand]
        return []

    found, todo, seen = {}, list(entries), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        inc = next((i for i in includes if i in path.parents), None)
        package = list(path.relative_to(inc).parent.parts) if inc else []
        for node in runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + (node.module.split(".") if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for name in names:
                todo += [f for f in local(name) if f.is_file()]
                if name.split(".")[0] not in own:
                    found.setdefault(name.split(".")[0], path)
    return found


def test_imports_of_what_the_image_runs_are_installed():
    """Every module the node and the weights CLI import (lazily too) exists in the Python 3.8 image."""
    entries = entry_points()
    if not entries:
        pytest.skip("no node or weights module yet")
    # amd64 installs both files: dependencies-py3.txt and the Duckietown libraries of dependencies-py3.dt.txt
    reqs, pkg_deps = {**requirements(), **requirements("dependencies-py3.dt.txt")}, set()
    for d in catkin_packages().values():
        root = ET.parse(d / "package.xml").getroot()
        pkg_deps |= {e.text for e in root if e.tag in ("depend", "exec_depend", "run_depend")}
    problems = []
    for mod, where in sorted(imported_modules(entries).items()):
        at = where.relative_to(ROOT)
        if mod in sys.stdlib_module_names:
            if mod in NEWER_THAN_PY38:
                problems.append(f"{at}: {mod} is not in Python 3.8's stdlib")
        elif mod in ROS_CORE_MODULES or mod in pkg_deps:
            continue
        elif norm(IMPORT_TO_DIST.get(mod, mod)) not in reqs:
            problems.append(f"{at}: {mod} is neither in dependencies-py3.txt nor a package.xml dependency")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- metadata
def test_package_xml_maintainer_emails_are_valid():
    for d in catkin_packages().values():
        for m in ET.parse(d / "package.xml").getroot().findall("maintainer"):
            assert EMAIL.match(m.get("email") or ""), f"{d.name}/package.xml: bad maintainer email"


def test_dtproject_and_configurations():
    dtproject = dict(ln.split("=", 1) for ln in (ROOT / ".dtproject").read_text().split())
    assert dtproject["TYPE"] == "template-ros" and dtproject["TYPE_VERSION"] == "3"
    assert re.fullmatch(r"\d+\.\d+\.\d+", dtproject["VERSION"])
    conf = (ROOT / "configurations.yaml").read_text()
    assert re.search(r"^version: '1\.0'$", conf, re.M) and re.search(r"^configurations:", conf, re.M)
