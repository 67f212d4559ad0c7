#!/bin/bash
# dt-launcher-default (the image's CMD): same as dt-launcher-depth-estimation.
# Every file in launchers/ is installed as dt-launcher-<stem> (see dt-install-launchers).
exec dt-launcher-depth-estimation "$@"
