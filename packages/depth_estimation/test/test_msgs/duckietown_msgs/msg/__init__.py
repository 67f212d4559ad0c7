"""Test-only ``duckietown_msgs.msg.StopLineReading``: the message class genpy generates from the .msg
definition next to this file (dt-ros-commons daffy's fields), with the installed std_msgs/Header and
geometry_msgs/Point as its dependencies; so its type, MD5 and wire format are those of the real package.
Put ``test/test_msgs`` on PYTHONPATH (tests only; the Duckietown image has the real package)."""
import os

import genpy.dynamic
from geometry_msgs.msg import Point
from std_msgs.msg import Header

_SEPARATOR = "\n" + "=" * 80 + "\n"  # genpy's separator between a message and its dependencies


def _generate(name):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".msg")) as f:
        text = f.read()
    full = text + "".join(_SEPARATOR + "MSG: %s\n%s" % (dep._type, dep._full_text) for dep in (Header, Point))
    return genpy.dynamic.generate_dynamic("duckietown_msgs/" + name, full)["duckietown_msgs/" + name]


StopLineReading = _generate("StopLineReading")
