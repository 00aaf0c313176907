package replica_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/replica"
)

// testCanister is a tiny canister: echo/set_certified/trap/reject/panic updates, greet/cert/
// trap_query queries, candid metadata, a Runner and a control hook.
type testCanister struct {
	host replica.Host

	mu        sync.Mutex
	certified []byte

	inUpdate   atomic.Bool
	overlap    atomic.Bool // set if two updates ever ran at once
	executions sync.Map    // arg string -> *atomic.Int64
	runs       atomic.Int64
	ran        chan struct{}
	ranOnce    sync.Once
}

const testCandid = `service : { echo : (text) -> (text); greet : (text) -> (text) query; trap : () -> (); }`

func newTestCanister(h replica.Host) (replica.Canister, error) {
	return &testCanister{host: h, ran: make(chan struct{})}, nil
}

func (c *testCanister) count(arg []byte) int64 {
	v, _ := c.executions.LoadOrStore(string(arg), new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (c *testCanister) Update(_ context.Context, call replica.Call) ([]byte, error) {
	if c.inUpdate.Swap(true) {
		c.overlap.Store(true)
	}
	defer c.inUpdate.Store(false)
	v, _ := c.executions.LoadOrStore(string(call.Arg), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	switch call.Method {
	case "echo":
		var s string
		if err := candid.Unmarshal(call.Arg, []any{&s}); err != nil {
			return nil, fmt.Errorf("decode echo arg: %w", err)
		}
		return candid.Marshal([]any{s})
	case "whoami":
		return candid.Marshal([]any{call.Caller})
	case "set_certified":
		var s string
		if err := candid.Unmarshal(call.Arg, []any{&s}); err != nil {
			return nil, fmt.Errorf("decode arg: %w", err)
		}
		h := sha256.Sum256([]byte(s))
		c.mu.Lock()
		defer c.mu.Unlock()
		c.certified = h[:]
		if err := c.host.SetCertifiedData(h[:]); err != nil {
			return nil, err
		}
		return candid.Marshal([]any{})
	case "trap":
		return nil, errors.New("boom")
	case "reject":
		return nil, replica.CanisterRejected("no thanks")
	case "panic":
		panic("canister bug")
	}
	return nil, replica.MethodNotFound(c.host.CanisterID(), call.Method, false)
}

func (c *testCanister) Query(_ context.Context, call replica.Call) ([]byte, error) {
	switch call.Method {
	case "greet":
		var s string
		if err := candid.Unmarshal(call.Arg, []any{&s}); err != nil {
			return nil, fmt.Errorf("decode greet arg: %w", err)
		}
		return candid.Marshal([]any{"Hello, " + s + "!"})
	case "whoami":
		return candid.Marshal([]any{call.Caller})
	case "cert":
		c.mu.Lock()
		defer c.mu.Unlock()
		cert, err := call.DataCertificate()
		if err != nil {
			return nil, err
		}
		return candid.Marshal([]any{append([]byte{}, c.certified...), cert})
	case "trap_query":
		return nil, errors.New("query boom")
	}
	return nil, replica.MethodNotFound(c.host.CanisterID(), call.Method, true)
}

func (c *testCanister) Metadata(name string) ([]byte, bool) {
	if name == "candid:service" {
		return []byte(testCandid), true
	}
	return nil, false
}

func (c *testCanister) Run(ctx context.Context) error {
	c.runs.Add(1)
	c.ranOnce.Do(func() { close(c.ran) })
	<-ctx.Done()
	return nil
}

func (c *testCanister) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, "pong from ", c.host.CanisterID())
	})
	return mux
}

var testCanisterID = principal.MustDecode("rrkah-fqaaa-aaaaa-aaaaq-cai")
