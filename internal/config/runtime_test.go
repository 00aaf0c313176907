package config

import (
	"runtime/debug"
	"testing"
)

// The collector target applies unless GOGC is set (the Go runtime applied that one) or the
// target is out of range.
func TestRuntimeApply(t *testing.T) {
	previous := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(previous) })
	env := func(gogc string) func(string) string {
		return func(name string) string {
			if name == "GOGC" {
				return gogc
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name    string
		percent int
		gogc    string
		want    int
	}{
		{"applied", 50, "", 50},
		{"GOGC set", 50, "200", 100},
		{"out of range", 5, "", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			(&Runtime{GCPercent: tc.percent}).Apply(env(tc.gogc))
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GC percent %d, want %d", got, tc.want)
			}
		})
	}
	if err := (&Runtime{GCPercent: 9}).Validate(); err == nil {
		t.Error("ICWS_GC_PERCENT=9 accepted")
	}
}
