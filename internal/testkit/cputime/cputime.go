// Package cputime reports the CPU time a benchmark's process used per operation. On a machine
// shared with other work, wall-clock ns/op drifts with the load; the CPU time the process itself
// spent (user + system, every goroutine and every in-process server included) drifts far less.
// It has no dependencies, so the tests of any package may use it.
package cputime

import (
	"testing"
	"time"
)

// Meter adds up the process's CPU time while it runs.
type Meter struct {
	used    time.Duration
	since   time.Duration
	running bool
	ok      bool
}

// Start returns a running meter; call it right after b.ResetTimer.
func Start() *Meter {
	m := &Meter{ok: true}
	m.Start()
	return m
}

// Start resumes a stopped meter.
func (m *Meter) Start() {
	if m.running {
		return
	}
	d, ok := processCPU()
	m.since, m.running, m.ok = d, true, m.ok && ok
}

// Stop pauses the meter (around work the benchmark must not count, as b.StopTimer).
func (m *Meter) Stop() {
	if !m.running {
		return
	}
	d, ok := processCPU()
	m.used += d - m.since
	m.running, m.ok = false, m.ok && ok
}

// Report stops the meter and adds the CPU time per operation as the metric "cpu-ns/op", and per
// unit of work as "cpu-ns/<unit>" when units > 0 (for example per message of a batch).
func (m *Meter) Report(b *testing.B, units int, unit string) {
	m.Stop()
	if !m.ok || b.N == 0 {
		return
	}
	b.ReportMetric(float64(m.used)/float64(b.N), "cpu-ns/op")
	if units > 0 && unit != "" {
		b.ReportMetric(float64(m.used)/float64(b.N*units), "cpu-ns/"+unit)
	}
}
