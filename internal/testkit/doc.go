// Package testkit holds what the tests of several icws packages share: waiting for a condition
// with a deadline (WaitFor, WaitForNil), a logger that writes through t.Log (Logger), an empty
// environment (ClearEnvironment), a nats-server with the icws topology, client-signed call
// envelopes made by the production signer, and a replica simulator behind an HTTP server. It is
// imported only by _test.go files, never by production code. Tests of bus and icclient
// themselves cannot import it (it imports them); the nats-server alone is in the dependency-free
// subpackage natstest.
package testkit
