//go:build !unix

package edge

// openFileLimit is unknown here: the connection limit alone bounds the sockets.
func openFileLimit() uint64 { return 0 }
