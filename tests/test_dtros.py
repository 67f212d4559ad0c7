"""The node on DTROS (Duckietown image) and on plain rospy (here): the DTROS names and signatures it
relies on, checked statically against a table read from dt-ros-commons' daffy sources.

The table was read from github.com/duckietown/dt-ros-commons, branch daffy, commit
10deb6cae9334d013a53f1617c6c531e8c1b6882 (4.3.0, 2024-04-17), files
packages/duckietown/include/duckietown/dtros/{__init__,dtros,dtparam,constants}.py. Set
DT_ROS_COMMONS_GIT to a clone's git directory to check the table against those files again.
"""
import ast
import enum
import importlib.util
import inspect
import os
import subprocess
import sys
import types

import pytest

from conftest import ROOT

NODE = os.path.join(ROOT, "packages", "depth_estimation", "src", "depth_node.py")
COMMIT = "10deb6cae9334d013a53f1617c6c531e8c1b6882"
DTROS_DIR = "packages/duckietown/include/duckietown/dtros/"

DTROS_SOURCES = {
    # __init__.py: what `from duckietown.dtros import ...` offers; it keeps rospy's own Publisher
    # as rospy.__Publisher__ before replacing rospy.Publisher with DTPublisher
    "exports": {"DTROS", "DTParam", "TopicType", "NodeType", "ParamType", "NodeHealth", "TopicDirection"},
    "keeps_rospy_publisher_as": "__Publisher__",
    # dtros.py: class DTROS
    "DTROS.__init__": ["self", "node_name", "node_type", "pkg_name=None", "help=None", "dt_ghost=False"],
    "DTROS.methods": {"__init__", "_add_param", "_has_param", "_on_shutdown", "_param_update",
                      "_register_publisher", "_register_subscriber", "_srv_get_params_list",
                      "_srv_request_param_update", "_srv_switch", "is_ghost", "log", "logdebug", "logerr",
                      "logfatal", "loginfo", "logwarn", "on_shutdown", "on_switch_off", "on_switch_on",
                      "package_name", "package_path", "parameters", "publishers", "set_health", "subscribers",
                      "switch"},
    "DTROS.properties": {"is_ghost", "switch", "parameters", "subscribers", "publishers", "package_path",
                         "package_name"},
    "DTROS.attributes": {"_health", "_health_reason", "_is_ghost", "_parameters", "_publishers",
                         "_rh_paramUpdate", "_ros_handler", "_srv_get_params", "_srv_request_params_update",
                         "_subscribers", "_switch", "is_shutdown", "node_help", "node_name", "node_type",
                         "profiler", "srv_switch"},
    "DTROS.set_health": ["self", "health", "reason=None"],
    # the ~switch service: rospy.Service("~%s" % NODE_SWITCH_SERVICE_NAME, SetBool, self._srv_switch)
    "switch_service": ("switch", "SetBool"),
    # dtparam.py: class DTParam
    "DTParam.__init__": ["self", "name", "default=None", "help=None", "param_type=ParamType.UNKNOWN",
                         "min_value=None", "max_value=None", "__editable__=True"],
    # constants.py
    "NodeType.PERCEPTION": 2,
    "NodeHealth": {"UNKNOWN": 0, "STARTING": 5, "STARTED": 6, "HEALTHY": 10, "WARNING": 20, "ERROR": 30,
                   "FATAL": 40},
    "ParamType.classmethods": {"parse", "guess_type"},
}
OVERRIDDEN = {"on_switch_on", "on_switch_off", "on_shutdown"}  # DTROS's hooks for its subclasses


def _signature(function):
    args = function.args
    names = [a.arg for a in args.args]
    defaults = [None] * (len(names) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
    return [n if d is None else "%s=%s" % (n, d) for n, d in zip(names, defaults)]


def _classes(tree):
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}


def _methods(cls):
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _self_attributes(cls):
    return {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
            and isinstance(n.value, ast.Name) and n.value.id == "self"}


NODE_TREE = ast.parse(open(NODE).read())


def _calls(name):
    return [n for n in ast.walk(NODE_TREE) if isinstance(n, ast.Call) and ast.unparse(n.func) == name]


def _keywords(call):
    return {k.arg for k in call.keywords}


def _load_node(name):
    spec = importlib.util.spec_from_file_location(name, NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parameter_names(recorded):
    return [p.split("=")[0] for p in recorded]


# ------------------------------------------------------------- the node's use of DTROS, statically
def test_the_node_imports_only_what_duckietown_dtros_exports():
    imported = {a.name for n in ast.walk(NODE_TREE) if isinstance(n, ast.ImportFrom)
                and n.module == "duckietown.dtros" for a in n.names}
    assert imported and imported <= DTROS_SOURCES["exports"]
    assert {"DTROS", "NodeType"} <= imported


def test_the_node_builds_its_dtros_base_with_the_recorded_keywords():
    (call,) = [c for c in _calls("super().__init__")]
    accepted = _parameter_names(DTROS_SOURCES["DTROS.__init__"])[1:]
    assert not call.args and _keywords(call) <= set(accepted)
    assert {"node_name", "node_type"} <= _keywords(call)  # DTROS's two required arguments
    node_type = [k.value for k in call.keywords if k.arg == "node_type"][0]
    assert ast.unparse(node_type) == "NodeType.PERCEPTION"
    for call in _calls("self.set_health"):
        assert len(call.args) <= len(DTROS_SOURCES["DTROS.set_health"]) - 1 and not call.keywords


def test_the_node_declares_its_run_time_parameters_as_dtparams_the_recorded_way():
    (call,) = _calls("DTParam")
    accepted = set(_parameter_names(DTROS_SOURCES["DTParam.__init__"])[1:])
    assert len(call.args) == 1 and _keywords(call) <= accepted
    for call in _calls("ParamType.guess_type"):
        assert "guess_type" in DTROS_SOURCES["ParamType.classmethods"]


def test_the_node_does_not_shadow_dtros_members():
    node_class = _classes(NODE_TREE)["DepthNode"]
    own = set(_methods(node_class)) | _self_attributes(node_class)
    dtros = DTROS_SOURCES["DTROS.methods"] | DTROS_SOURCES["DTROS.attributes"]
    assert own & dtros == OVERRIDDEN | {"__init__"}, own & dtros


# ---------------------------------------------------------------- the plain-ROS base, by importing it
def test_on_plain_ros_the_node_runs_on_a_base_with_the_dtros_surface_it_uses():
    pytest.importorskip("std_srvs")
    try:  # duckietown-sdk (depth-live) may install a `duckietown` package, but DTROS comes only with ROS images
        assert importlib.util.find_spec("duckietown.dtros") is None, "this test is for a machine without DTROS"
    except ModuleNotFoundError:
        pass
    node = _load_node("depth_node_plain")
    assert node.DTROS is None and node.BaseNode is node.PlainNode and node.DepthNode.__bases__ == (node.PlainNode,)
    plain = list(inspect.signature(node.PlainNode.__init__).parameters)
    recorded = _parameter_names(DTROS_SOURCES["DTROS.__init__"])
    assert plain == [p for p in recorded if p in plain] and set(plain) >= {"self", "node_name", "node_type",
                                                                          "help"}
    assert isinstance(inspect.getattr_static(node.PlainNode, "switch"), property)
    for name in OVERRIDDEN | {"set_health", "_srv_switch", "_on_shutdown"}:
        assert callable(getattr(node.PlainNode, name)) and name in DTROS_SOURCES["DTROS.methods"]
    assert node.NodeType.PERCEPTION.value == DTROS_SOURCES["NodeType.PERCEPTION"]
    for member in node.DTHealth:
        assert DTROS_SOURCES["NodeHealth"][member.name] == member.value
    source = inspect.getsource(node.PlainNode.__init__)
    service, service_type = DTROS_SOURCES["switch_service"]
    assert 'rospy.Service("~%s", %s,' % (service, service_type) in source
    assert node.PlainPublisher is node.rospy.Publisher


def test_with_duckietown_installed_the_node_is_a_dtros_node(monkeypatch):
    """A stand-in for duckietown.dtros with the recorded names: the node takes DTROS as its base,
    and keeps the undecorated publisher for /diagnostics."""
    import rospy

    class DTROS:
        def __init__(self, node_name, node_type, pkg_name=None, help=None, dt_ghost=False):  # noqa: A002
            pass

    class Undecorated:
        pass

    dtros = types.ModuleType("duckietown.dtros")
    for name in DTROS_SOURCES["exports"]:
        setattr(dtros, name, type(name, (), {}))
    dtros.DTROS = DTROS
    dtros.NodeType = enum.Enum("NodeType", {"PERCEPTION": DTROS_SOURCES["NodeType.PERCEPTION"]})
    dtros.NodeHealth = enum.Enum("NodeHealth", DTROS_SOURCES["NodeHealth"])
    package = types.ModuleType("duckietown")
    package.dtros = dtros
    monkeypatch.setitem(sys.modules, "duckietown", package)
    monkeypatch.setitem(sys.modules, "duckietown.dtros", dtros)
    monkeypatch.setattr(rospy, DTROS_SOURCES["keeps_rospy_publisher_as"], Undecorated, raising=False)
    node = _load_node("depth_node_dtros")
    assert node.BaseNode is DTROS and node.DepthNode.__bases__ == (DTROS,)
    assert node.PlainPublisher is Undecorated and node.DTParam is dtros.DTParam
    assert node.DT_HEALTH[node.ERROR] is dtros.NodeHealth.ERROR


# ------------------------------------------------------------------- the table against the sources
def _git_show(path):
    git = os.environ.get("DT_ROS_COMMONS_GIT")
    if not git:
        pytest.skip("set DT_ROS_COMMONS_GIT to a clone of duckietown/dt-ros-commons to re-check the table")
    out = subprocess.run(["git", "--git-dir", git, "show", "%s:%s%s" % (COMMIT, DTROS_DIR, path)],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True)
    return out.stdout


def test_the_recorded_table_matches_dt_ros_commons_daffy():
    init = ast.parse(_git_show("__init__.py"))
    exported = {a.asname or a.name for n in init.body if isinstance(n, ast.ImportFrom) and n.level
                for a in n.names}
    assert DTROS_SOURCES["exports"] <= exported
    assert "setattr(rospy, '__Publisher__', rospy.Publisher)" in ast.unparse(init).replace('"', "'")
    dtros = _classes(ast.parse(_git_show("dtros.py")))["DTROS"]
    methods = _methods(dtros)
    assert set(methods) == DTROS_SOURCES["DTROS.methods"]
    assert _self_attributes(dtros) == DTROS_SOURCES["DTROS.attributes"]
    assert _signature(methods["__init__"]) == DTROS_SOURCES["DTROS.__init__"]
    assert _signature(methods["set_health"]) == DTROS_SOURCES["DTROS.set_health"]
    properties = {n for n, f in methods.items() if any(ast.unparse(d) == "property" for d in f.decorator_list)}
    assert properties == DTROS_SOURCES["DTROS.properties"]
    service = ast.unparse(methods["__init__"])
    assert "rospy.Service('~%%s' %% NODE_SWITCH_SERVICE_NAME, %s, self._srv_switch)" % (
        DTROS_SOURCES["switch_service"][1]) in service
    assert "self.on_switch_off" in ast.unparse(methods["_srv_switch"])
    dtparam = _classes(ast.parse(_git_show("dtparam.py")))["DTParam"]
    assert _signature(_methods(dtparam)["__init__"]) == DTROS_SOURCES["DTParam.__init__"]
    constants = ast.parse(_git_show("constants.py"))
    assert "NODE_SWITCH_SERVICE_NAME = '%s'" % DTROS_SOURCES["switch_service"][0] in ast.unparse(constants)
    classes = _classes(constants)
    values = {c: {t.targets[0].id: ast.literal_eval(t.value) for t in classes[c].body
                  if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)
                  and isinstance(t.value, ast.Constant)} for c in ("NodeType", "NodeHealth")}
    assert values["NodeType"]["PERCEPTION"] == DTROS_SOURCES["NodeType.PERCEPTION"]
    assert values["NodeHealth"] == DTROS_SOURCES["NodeHealth"]
    assert DTROS_SOURCES["ParamType.classmethods"] <= set(_methods(classes["ParamType"]))
