package icclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/protocol"
	"github.com/icws/icws/protocol/certificate"
	"github.com/icws/icws/protocol/hashtree"
)

// CallStatus is what the IC said about an update call.
type CallStatus int

const (
	// CallReplied: certified reply (CallOutcome.Reply).
	CallReplied CallStatus = iota + 1
	// CallRejected: certified reject (RejectCode, RejectMessage, ErrorCode).
	CallRejected
	// CallAccepted: the IC took the call (HTTP 202, or v3 answered before certification); the
	// outcome is not known yet.
	CallAccepted
	// CallNonReplicatedRejection: refused before execution (not certified).
	CallNonReplicatedRejection
	// CallDone: executed, but the certified answer has already been pruned.
	CallDone
)

func (s CallStatus) String() string {
	switch s {
	case CallReplied:
		return "replied"
	case CallRejected:
		return "rejected"
	case CallAccepted:
		return "accepted"
	case CallNonReplicatedRejection:
		return "non_replicated_rejection"
	case CallDone:
		return "done"
	}
	return fmt.Sprintf("CallStatus(%d)", int(s))
}

// CallOutcome is the result of submitting or polling a call.
type CallOutcome struct {
	Status        CallStatus
	Reply         []byte
	RejectCode    uint64
	RejectMessage string
	ErrorCode     string
	RequestID     protocol.RequestID
}

// Reject returns the outcome's rejection as an error, or nil if it is not a rejection.
func (o CallOutcome) Reject() *RejectError {
	if o.Status != CallRejected && o.Status != CallNonReplicatedRejection {
		return nil
	}
	return &RejectError{Code: o.RejectCode, Message: o.RejectMessage, ErrorCode: o.ErrorCode}
}

// callAnswer is the body of a v3 call answered with 200.
type callAnswer struct {
	Status        string  `cbor:"status"`
	Certificate   []byte  `cbor:"certificate"`
	RejectCode    uint64  `cbor:"reject_code"`
	RejectMessage *string `cbor:"reject_message"`
	ErrorCode     string  `cbor:"error_code"`
}

func decodeCallAnswer(body []byte) (callAnswer, error) {
	var a callAnswer
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(body), &a); err != nil {
		return a, &DecodeError{fmt.Errorf("call answer: %w", err)}
	}
	return a, nil
}

// SubmitCall POSTs a signed call envelope byte for byte to the call endpoint of canister (the
// effective canister id) and interprets the answer; a v3 certificate is verified before it is
// believed. Transport errors and HTTP 5xx/429 are retryable; 4xx come back as *HTTPError.
func (c *Client) SubmitCall(ctx context.Context, canister principal.Principal, envelope []byte) (CallOutcome, error) {
	return c.SubmitCallHinted(ctx, canister, envelope, nil)
}

// SubmitCallHinted is SubmitCall that also calls answered (unless nil), on the calling goroutine,
// as soon as the IC answers a v3 call with a certificate and before that certificate is verified:
// a hint, not an outcome, that the call has executed, for work that costs only time when the hint
// is wrong (a poll of the canister). Verifying a certificate takes about a millisecond.
func (c *Client) SubmitCallHinted(ctx context.Context, canister principal.Principal, envelope []byte, answered func()) (CallOutcome, error) {
	rid, err := protocol.RequestIDOfEnvelope(envelope)
	if err != nil {
		return CallOutcome{}, fmt.Errorf("submit call: %w", err)
	}
	out := CallOutcome{RequestID: rid}
	path := fmt.Sprintf("/api/v%d/canister/%s/call", c.cfg.CallAPIVersion, canister.Encode())
	ans, err := c.do(ctx, http.MethodPost, path, envelope, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return out, fmt.Errorf("submit call %x: %w", rid[:8], err)
	}
	stagetrace.Mark(ctx, c.log, stagetrace.ICAnswered)
	if ans.status == http.StatusAccepted {
		out.Status = CallAccepted
		return out, nil
	}
	a, err := decodeCallAnswer(ans.data)
	if err != nil {
		return out, fmt.Errorf("submit call %x: %w", rid[:8], err)
	}
	switch {
	case a.Status == "replied" && len(a.Certificate) > 0:
		if answered != nil {
			answered()
		}
		cert, err := c.verifyCertificate(a.Certificate, canister)
		if err != nil {
			return out, fmt.Errorf("submit call %x: %w", rid[:8], err)
		}
		stagetrace.Mark(ctx, c.log, stagetrace.ICCertified)
		o, err := outcomeFromCertificate(cert, rid)
		if err != nil {
			return out, fmt.Errorf("submit call %x: %w", rid[:8], err)
		}
		return o, nil
	case a.Status == "non_replicated_rejection" || (a.Status == "" && a.RejectMessage != nil):
		out.Status = CallNonReplicatedRejection
		out.RejectCode = a.RejectCode
		if a.RejectMessage != nil {
			out.RejectMessage = *a.RejectMessage
		}
		out.ErrorCode = a.ErrorCode
		return out, nil
	}
	return out, fmt.Errorf("submit call %x: %w", rid[:8], &DecodeError{fmt.Errorf("unexpected answer status %q", a.Status)})
}

// RequestStatus reads the certified status of a request made by the gateway identity.
// A request the IC does not know (yet) is CallAccepted.
func (c *Client) RequestStatus(ctx context.Context, canister principal.Principal, rid protocol.RequestID) (CallOutcome, error) {
	cert, err := c.readState(ctx, canister, [][][]byte{{[]byte("request_status"), rid[:]}})
	if err != nil {
		return CallOutcome{RequestID: rid}, fmt.Errorf("request status %x: %w", rid[:8], err)
	}
	o, err := outcomeFromCertificate(cert, rid)
	if err != nil {
		return o, fmt.Errorf("request status %x: %w", rid[:8], err)
	}
	return o, nil
}

// Call makes an update call signed by the gateway identity and waits for its certified outcome.
// Retryable failures re-send the same envelope (the IC de-duplicates by request id) until ctx
// ends or the envelope expires. A reject is returned as *RejectError.
func (c *Client) Call(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error) {
	r := c.newRequest(RequestCall)
	r.Canister, r.Method, r.Arg, r.Nonce = canister, method, arg, randomNonce()
	env, rid, err := SignEnvelope(c.cfg.Identity, r)
	if err != nil {
		return nil, fmt.Errorf("call %s.%s: %w", canister, method, err)
	}
	expiry := r.IngressExpiry
	delay := c.cfg.PollInterval
	wait := func() error {
		if time.Now().Add(delay).After(expiry) {
			return errors.New("request expired before a certified outcome")
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
		return nil
	}
	submitted := false
	// Answers that fail verification or decoding are retried a few times only: past that, the
	// cause is more likely a wrong root key or a broken endpoint than bad luck.
	badAnswers := 0
	for {
		var o CallOutcome
		if !submitted {
			o, err = c.SubmitCall(ctx, canister, env)
		} else {
			o, err = c.RequestStatus(ctx, canister, rid)
		}
		if err != nil {
			var ve *VerificationError
			var de *DecodeError
			if errors.As(err, &ve) || errors.As(err, &de) {
				badAnswers++
			}
			if !IsRetryable(err) || ctx.Err() != nil || badAnswers >= maxBadAnswers {
				return nil, fmt.Errorf("call %s.%s: %w", canister, method, err)
			}
			c.log.Debug("ic call: retrying", "canister", canister.Encode(), "method", method, "err", err)
		} else {
			switch o.Status {
			case CallReplied:
				return o.Reply, nil
			case CallRejected, CallNonReplicatedRejection:
				return nil, o.Reject()
			case CallDone:
				return nil, fmt.Errorf("call %s.%s: request %x is done but its answer was pruned", canister, method, rid[:8])
			case CallAccepted:
				submitted = true
			}
		}
		if err := wait(); err != nil {
			return nil, fmt.Errorf("call %s.%s: %w", canister, method, err)
		}
	}
}

// maxBadAnswers bounds how often Call retries after answers that fail verification or decoding.
const maxBadAnswers = 3

// readStateAnswer is the body of a read_state answer.
type readStateAnswer struct {
	Certificate []byte `cbor:"certificate"`
}

func decodeReadStateAnswer(body []byte) (readStateAnswer, error) {
	var a readStateAnswer
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(body), &a); err != nil {
		return a, &DecodeError{fmt.Errorf("read_state answer: %w", err)}
	}
	if len(a.Certificate) == 0 {
		return a, &DecodeError{errors.New("read_state answer has no certificate")}
	}
	return a, nil
}

// readState signs a read_state request for paths and returns its verified certificate.
func (c *Client) readState(ctx context.Context, canister principal.Principal, paths [][][]byte) (*certificate.Certificate, error) {
	r := c.newRequest(RequestReadState)
	r.Paths = paths
	env, _, err := SignEnvelope(c.cfg.Identity, r)
	if err != nil {
		return nil, err
	}
	ans, err := c.do(ctx, http.MethodPost, "/api/v2/canister/"+canister.Encode()+"/read_state", env, http.StatusOK)
	if err != nil {
		return nil, err
	}
	a, err := decodeReadStateAnswer(ans.data)
	if err != nil {
		return nil, err
	}
	return c.verifyCertificate(a.Certificate, canister)
}

// maxFutureSkew is how far in the future a certificate time may be (agent-js uses the same bound).
const maxFutureSkew = 5 * time.Minute

// verifyCertificate decodes a certificate, checks its signature chain against the root key for the
// effective canister, and checks its time.
func (c *Client) verifyCertificate(raw []byte, canister principal.Principal) (*certificate.Certificate, error) {
	cert, err := certificate.Decode(raw)
	if err != nil {
		return nil, &VerificationError{err}
	}
	if err := cert.VerifyCached(&c.certKeys, c.rootKey, canister.Raw); err != nil {
		return nil, &VerificationError{err}
	}
	t, err := cert.Time()
	if err != nil {
		return nil, &VerificationError{err}
	}
	now := time.Now()
	if now.Sub(t) > c.cfg.IngressExpiry {
		return nil, &VerificationError{fmt.Errorf("certificate is %s old (max %s)", now.Sub(t).Round(time.Millisecond), c.cfg.IngressExpiry)}
	}
	if t.Sub(now) > maxFutureSkew {
		return nil, &VerificationError{fmt.Errorf("certificate time %s is in the future", t)}
	}
	return cert, nil
}

// outcomeFromCertificate reads request_status/<rid> out of a verified certificate.
func outcomeFromCertificate(cert *certificate.Certificate, rid protocol.RequestID) (CallOutcome, error) {
	o := CallOutcome{RequestID: rid}
	look := func(field string) ([]byte, error) {
		v, st := cert.Tree.Lookup([]byte("request_status"), rid[:], []byte(field))
		if st != hashtree.Found {
			return nil, &lookupError{path: "request_status/" + field, status: st}
		}
		return v, nil
	}
	st, err := look("status")
	if err != nil {
		if err.(*lookupError).status == hashtree.Absent {
			o.Status = CallAccepted
			return o, nil
		}
		return o, &VerificationError{err}
	}
	switch string(st) {
	case "received", "processing":
		o.Status = CallAccepted
	case "done":
		o.Status = CallDone
	case "replied":
		reply, err := look("reply")
		if err != nil {
			return o, &VerificationError{err}
		}
		o.Status, o.Reply = CallReplied, reply
	case "rejected":
		code, err := look("reject_code")
		if err != nil {
			return o, &VerificationError{err}
		}
		if o.RejectCode, err = certificate.ULEB128(code); err != nil {
			return o, &VerificationError{fmt.Errorf("request_status/reject_code: %w", err)}
		}
		msg, err := look("reject_message")
		if err != nil {
			return o, &VerificationError{err}
		}
		o.RejectMessage = string(msg)
		if ec, err := look("error_code"); err == nil {
			o.ErrorCode = string(ec) // optional in the spec
		}
		o.Status = CallRejected
	default:
		return o, &VerificationError{fmt.Errorf("unknown request status %q", st)}
	}
	return o, nil
}

// lookupError is a certificate path that is not found.
type lookupError struct {
	path   string
	status hashtree.LookupStatus
}

func (e *lookupError) Error() string {
	return fmt.Sprintf("%s is %s in the certificate", e.path, e.status)
}
