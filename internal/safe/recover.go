// Package safe keeps a panic in the handling of one input from ending the process: a goroutine
// that works on network input (a client socket, an IC answer, a NATS message) defers Recover,
// which logs the panic, counts it, and lets the caller end just that one piece of work.
package safe

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Recover must be deferred directly (`defer safe.Recover(...)`). On a panic it logs it with the
// stack, increments counter (may be nil) and runs onPanic (may be nil), which should close the
// connection or fail the poll the panic happened in. Without a panic it does nothing.
func Recover(log *slog.Logger, counter prometheus.Counter, what string, onPanic func()) {
	r := recover()
	if r == nil {
		return
	}
	if counter != nil {
		counter.Inc()
	}
	if log != nil {
		log.Error("recovered from a panic; only this "+what+" is affected", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
	if onPanic != nil {
		onPanic()
	}
}
