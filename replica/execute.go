package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
)

// Request statuses as certified under request_status/<id>/status.
const (
	statusReceived   = "received"
	statusProcessing = "processing"
	statusReplied    = "replied"
	statusRejected   = "rejected"
)

// requestState is what the replica remembers of one update call (its ingress history entry).
type requestState struct {
	sender   principal.Principal
	canister principal.Principal
	expiry   time.Time
	done     chan struct{} // closed when the outcome is known

	mu     sync.Mutex
	status string
	reply  []byte
	reject *Reject
}

func (rs *requestState) setStatus(s string) {
	rs.mu.Lock()
	rs.status = s
	rs.mu.Unlock()
}

func (rs *requestState) isDone() bool {
	select {
	case <-rs.done:
		return true
	default:
		return false
	}
}

// addTo adds request_status/<id>/... to t.
func (rs *requestState) addTo(t certauth.Tree, id protocol.RequestID) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	s := t.Sub([]byte("request_status")).Sub(id[:])
	s["status"] = []byte(rs.status)
	switch rs.status {
	case statusReplied:
		s["reply"] = rs.reply
	case statusRejected:
		s["reject_code"] = certificate.AppendULEB128(nil, uint64(rs.reject.Code))
		s["reject_message"] = []byte(rs.reject.Message)
		s["error_code"] = []byte(rs.reject.ErrorCode)
	}
}

// submit records an update call and starts executing it, unless a call with the same request id
// is already known: the IC never executes a request id twice.
func (r *Replica) submit(in *protocol.Request, cs *canisterState) *requestState {
	now := time.Now()
	r.mu.Lock()
	if rs, ok := r.requests[in.ID]; ok {
		r.mu.Unlock()
		return rs
	}
	rs := &requestState{
		sender:   in.Sender,
		canister: cs.id,
		expiry:   in.Expiry,
		done:     make(chan struct{}),
		status:   statusReceived,
	}
	r.requests[in.ID] = rs
	if now.Sub(r.lastPrune) > time.Second {
		r.lastPrune = now
		for id, old := range r.requests {
			if old.isDone() && now.After(old.expiry.Add(r.cfg.ReplyRetention)) {
				delete(r.requests, id)
			}
		}
	}
	r.mu.Unlock()

	// Take a place in the canister's queue now, so updates execute in arrival order.
	cs.mu.Lock()
	prev := cs.tail
	mine := make(chan struct{})
	cs.tail = mine
	cs.mu.Unlock()
	go r.execute(rs, cs, in, prev, mine)
	return rs
}

func (r *Replica) execute(rs *requestState, cs *canisterState, in *protocol.Request, prev <-chan struct{}, mine chan<- struct{}) {
	defer close(mine)
	if r.cfg.UpdateLatency > 0 {
		// Simulated consensus delay: calls arriving together are "in the same block".
		t := time.NewTimer(r.cfg.UpdateLatency)
		<-t.C
	}
	if prev != nil {
		<-prev
	}
	rs.setStatus(statusProcessing)
	call := Call{Caller: in.Sender, Method: in.Method, Arg: in.Arg, Time: r.now()}
	reply, rej := invoke(cs.id, func() ([]byte, error) { return cs.impl.Update(context.Background(), call) })
	r.height.Add(1)
	rs.mu.Lock()
	if rej != nil {
		rs.status, rs.reject = statusRejected, rej
	} else {
		rs.status, rs.reply = statusReplied, reply
	}
	rs.mu.Unlock()
	close(rs.done)
	r.log.Debug("update executed", "canister", cs.id.String(), "method", in.Method,
		"request_id", fmt.Sprintf("%x", in.ID[:]), "rejected", rej != nil)
}

// invoke runs a canister method; a panic or a non-Reject error is a trap.
func invoke(canister principal.Principal, f func() ([]byte, error)) (reply []byte, rej *Reject) {
	defer func() {
		if p := recover(); p != nil {
			slog.Default().Debug("canister panicked", "canister", canister.String(), "panic", p, "stack", string(debug.Stack()))
			reply, rej = nil, CanisterTrapped(canister, fmt.Sprintf("panicked: %v", p))
		}
	}()
	out, err := f()
	if err != nil {
		var rj *Reject
		if errors.As(err, &rj) {
			return nil, normalizeReject(rj)
		}
		return nil, CanisterTrapped(canister, err.Error())
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// normalizeReject makes sure a reject has a code and an error code (agent-go hashes error_code).
func normalizeReject(rj *Reject) *Reject {
	c := *rj
	if c.Code == 0 {
		c.Code = CanisterError
	}
	if c.ErrorCode == "" {
		switch c.Code {
		case CanisterReject:
			c.ErrorCode = "IC0406"
		case DestinationInvalid:
			c.ErrorCode = "IC0536"
		case SysTransient:
			c.ErrorCode = "IC0504"
		default:
			c.ErrorCode = "IC0503"
		}
	}
	return &c
}

// statusCertificate certifies the current status of a request.
func (r *Replica) statusCertificate(rs *requestState, id protocol.RequestID) ([]byte, error) {
	t := certauth.Tree{"time": certauth.TimeLeaf(r.certTime())}
	rs.addTo(t, id)
	return r.certify(t)
}

// dataCertificate is ic0.data_certificate for a query of canister cs.
func (r *Replica) dataCertificate(cs *canisterState) ([]byte, error) {
	t := certauth.Tree{"time": certauth.TimeLeaf(r.certTime())}
	t.Sub([]byte("canister")).Sub(cs.id.Raw)["certified_data"] = cs.getCertifiedData()
	return r.certify(t)
}

// certify signs t, with a signature that does not verify while the TEST-ONLY corruption switch is
// on.
func (r *Replica) certify(t certauth.Tree) ([]byte, error) {
	if r.corruptCerts.Load() {
		return r.keys.CertifyWithBadSignature(t.Node())
	}
	return r.keys.Certify(t.Node())
}
