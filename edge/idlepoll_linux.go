package edge

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// idlePoller lets idle connections wait without a goroutine. A goroutine parked on a socket costs
// at least its 2 KiB stack, which is most of what an idle session costs; the poller instead keeps
// every idle socket in one epoll set (level-triggered, one-shot, beside Go's own netpoller) and
// starts a reader goroutine for a socket once it is readable, has reached its end or failed.
//
// A parked connection is woken by its socket or by release, which every path that closes a
// connection's socket calls first (closing a socket would silently take it out of the set and
// leave the connection parked for good).
type idlePoller struct {
	epfd int
	wake [2]int // a pipe: its read end is in the set, writing to it stops run

	mu     sync.Mutex
	parked map[uint64]*conn // by the token in the epoll event
	next   uint64           // token of the next park; never reused, so a stale event wakes nobody
}

// wakeToken marks the pipe's event; connection tokens start above it.
const wakeToken = 0

// newIdlePoller creates the epoll set; run must be started, and stop called once no connection
// is parked any more.
func newIdlePoller() (*idlePoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &idlePoller{epfd: epfd, parked: map[uint64]*conn{}, next: wakeToken + 1}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	ev := eventFor(wakeToken, syscall.EPOLLIN)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return p, nil
}

func (p *idlePoller) closeFDs() {
	_ = syscall.Close(p.epfd)
	_ = syscall.Close(p.wake[0])
	_ = syscall.Close(p.wake[1])
}

// eventFor stores a 64-bit token in the event's data (the Fd and Pad fields are its two halves).
func eventFor(token uint64, events uint32) syscall.EpollEvent {
	ev := syscall.EpollEvent{Events: events}
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
	return ev
}

func tokenOf(ev syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park adds c's socket to the set; false if it cannot be (the connection is being closed, has no
// plain socket, or epoll refused), and the caller then waits on the socket itself. After true, c
// belongs to the poller until its socket is ready or release takes it back.
func (p *idlePoller) park(c *conn) bool {
	if p == nil || c.rd.raw == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.noPark {
		return false
	}
	tok := p.next
	p.next++
	ev := eventFor(tok, syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLONESHOT)
	var err error
	cerr := c.rd.raw.Control(func(fd uintptr) {
		// A one-shot registration stays in the set, disabled, after its event: re-arm it.
		op := syscall.EPOLL_CTL_MOD
		if !c.inEpoll {
			op = syscall.EPOLL_CTL_ADD
		}
		if err = syscall.EpollCtl(p.epfd, op, int(fd), &ev); err == nil {
			c.inEpoll = true
		}
	})
	if cerr != nil || err != nil {
		return false
	}
	c.parkToken = tok
	p.parked[tok] = c
	return true
}

// release stops parking c for good and, if it is parked, takes it out of the set and starts its
// reader. Call it before closing c's socket.
func (p *idlePoller) release(c *conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	c.noPark = true
	parked := p.parked[c.parkToken] == c
	if parked {
		delete(p.parked, c.parkToken)
		_ = c.rd.raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
		c.inEpoll = false
	}
	p.mu.Unlock()
	if parked {
		go c.serve(true)
	}
}

// run starts the reader of each connection whose socket became ready, until stop.
func (p *idlePoller) run() error {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		stopping := false
		for _, ev := range events[:n] {
			tok := tokenOf(ev)
			if tok == wakeToken {
				stopping = true
				continue
			}
			p.mu.Lock()
			c := p.parked[tok]
			delete(p.parked, tok)
			p.mu.Unlock()
			if c != nil {
				go c.serve(true)
			}
		}
		if stopping {
			return nil
		}
	}
}

// stop ends run (which must have been started) and closes the set once run has returned.
func (p *idlePoller) stop(runDone <-chan struct{}) {
	if p == nil {
		return
	}
	_, _ = syscall.Write(p.wake[1], []byte{0})
	<-runDone
	p.closeFDs()
}
