package replica

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

// Host is what the replica offers a canister about itself (a small part of the IC system API).
type Host interface {
	CanisterID() principal.Principal
	// SetCertifiedData sets the canister's certified_data (at most 32 bytes), as ic0.certified_data_set.
	SetCertifiedData(data []byte) error
}

// Canister is a simulated canister. Updates of one canister are run one at a time; queries may run
// concurrently with each other and with updates, so a canister guards its own state.
type Canister interface {
	// Update executes an update call. The reply is Candid bytes; an error of type *Reject rejects
	// the call, any other error is a trap (reject code 5).
	Update(ctx context.Context, call Call) ([]byte, error)
	// Query executes a query call, with the same error convention as Update.
	Query(ctx context.Context, call Call) ([]byte, error)
}

// Call is one execution of a canister method.
type Call struct {
	Caller principal.Principal
	Method string
	Arg    []byte
	// Time is the replica's (wall-clock) time of this execution.
	Time time.Time
	// DataCertificate is set for queries only: it returns a certificate (CBOR, as ic0.data_certificate)
	// whose tree holds time and canister/<id>/certified_data with the canister's CURRENT certified
	// data. The canister calls it while holding its own lock, after reading its state, so tree and
	// certificate agree.
	DataCertificate func() ([]byte, error)
}

// Runner is implemented by canisters with background work (timers); Run returns when ctx ends.
type Runner interface {
	Run(ctx context.Context) error
}

// MetadataProvider is implemented by canisters with public metadata sections (e.g. "candid:service"),
// served through read_state canister/<id>/metadata/<name>.
type MetadataProvider interface {
	Metadata(name string) ([]byte, bool)
}

// ControlProvider is implemented by canisters with TEST-ONLY HTTP hooks; the handler is mounted at
// /_/control/<canister id text>/ with that prefix stripped. Nothing like it exists on the IC.
type ControlProvider interface {
	ControlHandler() http.Handler
}

// RejectCode is the IC's reject code of a rejected call.
type RejectCode uint64

// Reject codes as defined by the IC interface specification.
const (
	SysFatal           RejectCode = 1
	SysTransient       RejectCode = 2
	DestinationInvalid RejectCode = 3
	CanisterReject     RejectCode = 4
	CanisterError      RejectCode = 5
)

// Reject is a rejection of a call, as the IC reports it.
type Reject struct {
	Code    RejectCode
	Message string
	// ErrorCode is the IC's error code (e.g. "IC0536"); never empty, because agent-go hashes it into
	// the signed query response.
	ErrorCode string
}

func (r *Reject) Error() string {
	return fmt.Sprintf("reject code %d (%s): %s", r.Code, r.ErrorCode, r.Message)
}

// MethodNotFound is the IC's rejection of a call to a method the canister does not export.
func MethodNotFound(canister principal.Principal, method string, query bool) *Reject {
	kind := "update"
	if query {
		kind = "query"
	}
	return &Reject{
		Code:      DestinationInvalid,
		Message:   fmt.Sprintf("Canister %s has no %s method '%s'", canister, kind, method),
		ErrorCode: "IC0536",
	}
}

// CanisterTrapped is the IC's rejection of a call during which the canister trapped.
func CanisterTrapped(canister principal.Principal, msg string) *Reject {
	return &Reject{
		Code:      CanisterError,
		Message:   fmt.Sprintf("Error from Canister %s: Canister called `ic0.trap` with message: '%s'", canister, msg),
		ErrorCode: "IC0503",
	}
}

// CanisterRejected is the rejection a canister makes itself (ic0.msg_reject).
func CanisterRejected(msg string) *Reject {
	return &Reject{Code: CanisterReject, Message: msg, ErrorCode: "IC0406"}
}

// canisterStopped is the IC's rejection of a message to a stopped canister: queries and new calls
// are refused until the canister is started again.
func canisterStopped(canister principal.Principal) *Reject {
	return &Reject{
		Code:      CanisterError,
		Message:   fmt.Sprintf("Canister %s is stopped", canister),
		ErrorCode: "IC0508",
	}
}

// canisterNotFound is the IC's rejection of a message to a canister that does not exist.
func canisterNotFound(canister principal.Principal) *Reject {
	return &Reject{
		Code:      DestinationInvalid,
		Message:   fmt.Sprintf("Canister %s not found", canister),
		ErrorCode: "IC0301",
	}
}
