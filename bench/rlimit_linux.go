package bench

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises RLIMIT_NOFILE of this process to at least need (the hard limit too when
// the process may) and returns the soft limit in force.
func raiseFileLimit(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	if lim.Cur >= need {
		return lim.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return need, nil
	}
	// Raising the hard limit needs privilege; take what the hard limit allows.
	if lim.Cur < lim.Max {
		soft := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &soft); err == nil {
			lim.Cur = lim.Max
		}
	}
	return lim.Cur, fmt.Errorf("need %d open files, the limit is %d (hard %d): raise it (ulimit -n, or run as root)", need, lim.Cur, lim.Max)
}
