#!/usr/bin/env bash
# Runs icws, Centrifugo v6.9.1 and the NATS JetStream ceiling side by side on this machine
# (loopback only); flags go to the Go program (go run . -h lists them), e.g.
#   bench/compare/run.sh -sessions 3000 -md /tmp/compare.md
# It builds the peers with `go install` through the module proxy on first use, which takes minutes.
set -euo pipefail
cd "$(dirname "$0")"
exec go run . -repo ../.. "$@"
