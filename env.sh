# Source me (`source env.sh`) for a shell with the project's venv, ROS 1 and the built workspace.
_de_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
if [ ! -f "$_de_root/.build/catkin_ws/devel/setup.bash" ]; then
  echo "env.sh: workspace not built yet; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_de_root/.build/catkin_ws/devel/setup.bash"
# shellcheck disable=SC1091
source "$_de_root/.venv/bin/activate"
export DEPTH_ESTIMATION_ROOT="$_de_root"
export ROS_HOME="${ROS_HOME:-$_de_root/.build/ros_home}"
export PYTHONPATH="$_de_root/packages/depth_estimation/include${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$_de_root/packages/depth_estimation/scripts:$PATH"
unset _de_root
