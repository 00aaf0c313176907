//go:build unix

package edge

import "syscall"

// openFileLimit is the process's soft RLIMIT_NOFILE (Go raises it to the hard limit at start);
// 0 when unknown or unlimited.
func openFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<40 {
		return 0
	}
	return lim.Cur
}
