#!/bin/bash
# Runs inside the image root: leave a mark the test can find in the erofs image.
set -euxo pipefail
echo "built by kiwi_build integration test" > /etc/attestable-test-mark
