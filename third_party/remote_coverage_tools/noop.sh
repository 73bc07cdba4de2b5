#!/bin/sh
# Offline stand-in: `bazel coverage` is not used; see README (gcovr on a --coverage build).
exit 0
