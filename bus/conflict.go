package bus

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// IsConflict reports whether err is a compare-and-set write of a KV key (Create, Update, or
// Delete/Purge with LastRevision) that lost to another write of the key. Use it instead of
// errors.Is with jetstream.ErrKeyExists or jetstream.ErrKeyRevisionMismatch.
//
// nats.go v1.55 does not report the conflict in one way. The server answers "wrong last sequence"
// with code 10071, and on a replicated (R>1) stream with 10164 when another write of the same key
// is still being proposed (nats-server 2.15 checkMsgHeadersPreClusteredProposal). Update and
// Delete wrap both codes in ErrKeyRevisionMismatch; ErrKeyExists also matches a 10071 from them,
// but not a 10164. Create wraps both in ErrKeyExists, except when the key's last entry is a
// delete or purge marker (a released lease, a finished session): then Create writes against the
// marker's revision and returns the server's error unwrapped, which matches ErrKeyExists only for
// 10071 and ErrKeyRevisionMismatch never. So the code itself is checked too.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
