#!/bin/sh
# Runs a test under --config=tsan; exists only to put tests/tsan.supp in its runfiles.
exec "$@"
