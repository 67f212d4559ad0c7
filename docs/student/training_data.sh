#!/usr/bin/env bash
# The shipped student's data, re-rendered from its seeds: the training sets of runs 4-6 (training maps
# only) and the three test bags of the benchmark, then the ground-truth labels of the training sets.
#
#   bash docs/student/training_data.sh DATA_DIR [SET ...]
#
# SET is any of dr nominal obst obst2 obst3 test (default: all). Each bag is DATA_DIR/SET/<map>.bag with
# its calibration in DATA_DIR/SET/calib_<map>/; each training set is labelled into DATA_DIR/cache/SET.
# A bag that exists is kept (depth-sim2bag never overwrites), so an interrupted run continues.
# Needs the catkin workspace's environment (make setup; source .build/catkin_ws/devel/setup.bash).
set -euo pipefail
DATA=${1:?usage: training_data.sh DATA_DIR [SET ...]}
shift
SETS=${*:-dr nominal obst obst2 obst3 test}
# the split's one source: sim_bench.TRAIN_MAPS / TEST_MAPS (no test map is ever labelled)
maps_of() { python3 -c "from depth_estimation.evaluation import sim_bench; print(*sim_bench.$1)"; }
train_maps=$(maps_of TRAIN_MAPS)  # stops here without the workspace's environment
test_maps=$(maps_of TEST_MAPS)
read -r -a TRAIN_MAPS <<< "$train_maps"
read -r -a TEST_MAPS <<< "$test_maps"
DRIVE="--mode drive --obstacle-density"

# set -> "frames first-seed options-on-every-map | options-added-on-even-map-indices (0, 2, ...)"
spec() {
  case $1 in
    dr)      echo "200 601 --mode mixed --domain-rand --distortion --jpeg |" ;;
    nominal) echo "200 701 --mode mixed --jpeg |" ;;
    obst)    echo "150 801 $DRIVE 0.5 --episode-frames 50 --jpeg | --domain-rand" ;;
    obst2)   echo "300 901 $DRIVE 0.5 --episode-frames 50 --jpeg | --domain-rand --distortion" ;;
    obst3)   echo "200 1001 $DRIVE 1.0 --episode-frames 40 --jpeg | --domain-rand --distortion" ;;
    test)    echo "200 201 $DRIVE 0.5 --episode-frames 50 --domain-rand --jpeg |" ;;
    *) echo "unknown set $1 (dr nominal obst obst2 obst3 test)" >&2; exit 2 ;;
  esac
}

for set in $SETS; do spec "$set" > /dev/null; done  # an unknown set stops the script before any work

for set in $SETS; do
  IFS='|' read -r head even <<< "$(spec "$set")"
  read -r frames seed every <<< "$head"
  if [ "$set" = test ]; then maps=("${TEST_MAPS[@]}"); else maps=("${TRAIN_MAPS[@]}"); fi
  mkdir -p "$DATA/$set"
  for i in "${!maps[@]}"; do
    map=${maps[$i]}
    [ -e "$DATA/$set/$map.bag" ] && { echo "[$set] $map.bag exists, kept"; continue; }
    extra=""; [ $((i % 2)) = 0 ] && extra=$even
    # shellcheck disable=SC2086  # the options are word lists
    depth-sim2bag --out "$DATA/$set/$map.bag" --maps "$map" --frames "$frames" --seed $((seed + i)) \
      --veh simbot --calibration-dir "$DATA/$set/calib_$map" $every $extra
  done
  if [ "$set" != test ]; then
    depth-distill label --teacher ground-truth --bags "$DATA/$set/*.bag" --cache "$DATA/cache/$set" --label-size 240
  fi
done
