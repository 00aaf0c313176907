//go:build !linux

package bench

// raiseFileLimit is a no-op where RLIMIT_NOFILE is not handled; 0 means unknown.
func raiseFileLimit(uint64) (uint64, error) { return 0, nil }
