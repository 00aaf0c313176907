// Package integration holds the end-to-end tests of icws: they build the icws binary and
// nats-server once (TestMain), start them as processes on loopback ports, and drive them with the
// Go client (client/) and with the real ic-websocket-js 0.5.0 client under Node (js/).
//
// Run with `go test ./integration/` (add -v for the measured figures). The JS test needs
// `npm ci` in integration/js. ICWS_IT_RACE=1 builds the binaries with -race.
package integration
