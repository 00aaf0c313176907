package icclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// HTTPError is an answer from the IC with an unexpected HTTP status: 4xx for requests the IC refuses
// (bad signature, expired, malformed), 5xx or 429 when it cannot serve right now.
type HTTPError struct {
	StatusCode int
	Body       string
	URL        string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("ic: %s: HTTP %d: %s", e.URL, e.StatusCode, e.Body)
}

// Retryable reports whether the same request may succeed later.
func (e *HTTPError) Retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout
}

// TransportError wraps a failure to reach the IC or to read its answer.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "ic: transport: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// VerificationError means an answer did not pass certificate or node-signature checks. The request
// may have been executed; asking again (the IC de-duplicates by request id) is the way to learn the
// certified outcome, so it counts as retryable.
type VerificationError struct{ Err error }

func (e *VerificationError) Error() string { return "ic: verification: " + e.Err.Error() }
func (e *VerificationError) Unwrap() error { return e.Err }

// DecodeError means the IC's answer could not be parsed.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "ic: decode answer: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Reject codes of the IC interface spec.
const (
	RejectSysFatal       = 1
	RejectSysTransient   = 2
	RejectDestinationInv = 3
	RejectCanisterReject = 4
	RejectCanisterError  = 5
)

// RejectError is a certified (call) or node-signed (query) rejection.
type RejectError struct {
	Code      uint64
	Message   string
	ErrorCode string
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("ic: rejected (code %d, %s): %s", e.Code, e.ErrorCode, e.Message)
}

// IsRetryable reports whether err is worth retrying with the same request: transport failures,
// HTTP 5xx/408/429, answers that failed verification or could not be decoded, and SysTransient
// rejects. A cancelled or expired caller context is never retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Retryable()
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	var ve *VerificationError
	if errors.As(err, &ve) {
		return true
	}
	var de *DecodeError
	if errors.As(err, &de) {
		return true
	}
	var re *RejectError
	if errors.As(err, &re) {
		return re.Code == RejectSysTransient
	}
	return false
}
