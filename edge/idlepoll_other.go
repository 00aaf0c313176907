//go:build !linux

package edge

// idlePoller is Linux's epoll set of idle connections (idlepoll_linux.go); elsewhere every
// connection waits in its own reader goroutine.
type idlePoller struct{}

func newIdlePoller() (*idlePoller, error)  { return nil, nil }
func (p *idlePoller) park(*conn) bool      { return false }
func (p *idlePoller) release(*conn)        {}
func (p *idlePoller) run() error           { return nil }
func (p *idlePoller) stop(<-chan struct{}) {}
