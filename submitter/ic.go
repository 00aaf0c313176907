package submitter

import (
	"context"
	"errors"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/icclient"
)

// IC is the part of the IC client the submitter uses; *icclient.Client satisfies it.
type IC interface {
	// SubmitCall posts a client-signed call envelope byte for byte and returns its outcome.
	SubmitCall(ctx context.Context, canister principal.Principal, envelope []byte) (icclient.CallOutcome, error)
	// Call makes an update call signed by the gateway identity and waits for its reply.
	Call(ctx context.Context, canister principal.Principal, method string, arg []byte) ([]byte, error)
}

var _ IC = (*icclient.Client)(nil)

// probingIC is implemented by IC clients that can ask the IC whether it answers at all
// (*icclient.Client does); the submitter then gives its partitions up while it cannot reach the IC
// (reach.go).
type probingIC interface {
	Status(ctx context.Context) error
}

var _ probingIC = (*icclient.Client)(nil)

// hintingIC is implemented by IC clients that tell when the IC answered a call, before the
// answer's certificate is verified (*icclient.Client does): the submitter kicks the poller then,
// so the poll overlaps the verification instead of following it.
type hintingIC interface {
	SubmitCallHinted(ctx context.Context, canister principal.Principal, envelope []byte, answered func()) (icclient.CallOutcome, error)
}

var _ hintingIC = (*icclient.Client)(nil)

// The rest of the package names icclient's types through these, so the IC client stays swappable.
type callOutcome = icclient.CallOutcome

const (
	statusReplied                = icclient.CallReplied
	statusRejected               = icclient.CallRejected
	statusAccepted               = icclient.CallAccepted
	statusNonReplicatedRejection = icclient.CallNonReplicatedRejection
	statusDone                   = icclient.CallDone
)

func isRetryable(err error) bool { return icclient.IsRetryable(err) }

// asReject returns the reject code and message of a certified canister reject.
func asReject(err error) (code uint64, msg string, ok bool) {
	var re *icclient.RejectError
	if errors.As(err, &re) {
		return re.Code, re.Message, true
	}
	return 0, "", false
}
