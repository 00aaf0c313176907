// Package stagetrace records when a message passes a stage of its path through icws (client,
// edge, submitter, IC, poller), as debug-level log records carrying a microsecond wall-clock
// stamp. Every process on one machine reads the same clock, so the records of a run's processes,
// merged and sorted by stamp, show where the time of a round trip goes (scripts/trace-echo).
//
// Below debug level a mark costs one Enabled check: no record, no allocation.
package stagetrace

import (
	"context"
	"log/slog"
	"time"
)

// Message is the message of every stage record; the stage is its "stage" attribute and the time
// its "at_us" attribute (Unix microseconds).
const Message = "stage"

// Stages of a client → canister → client echo, in the order a message passes them.
const (
	ClientSend            = "client.send"             // the application called Send
	ClientWritten         = "client.written"          // the client wrote its signed ws_message
	EdgeRead              = "edge.read"               // the edge read the frame from the socket
	EdgeVerified          = "edge.verified"           // the edge checked the envelope (signature, expiry)
	EdgeRelayed           = "edge.relayed"            // ICWS_IN acknowledged the edge's publish
	SubmitterConsumed     = "submitter.consumed"      // the submitter took the envelope from ICWS_IN
	ReplicaCallValidated  = "replica.call_validated"  // the replica read and checked the call
	ReplicaExecuted       = "replica.executed"        // the canister executed the call
	ReplicaCertified      = "replica.certified"       // the replica signed the call's certificate
	ICAnswered            = "ic.answered"             // the IC answered the submitter's call (HTTP)
	ICCertified           = "ic.certified"            // the submitter verified the answer's certificate
	SubmitterKicked       = "submitter.kicked"        // the submitter asked the poller to poll
	PollerKicked          = "poller.kicked"           // the poller took the kick
	PollerPollStart       = "poller.poll_start"       // the poller sent ws_get_messages
	ReplicaQueryValidated = "replica.query_validated" // the replica read and checked the query
	ReplicaQueryAnswered  = "replica.query_answered"  // the canister answered, the node signed the answer
	PollerPolled          = "poller.polled"           // the poller has the verified, decoded answer
	PollerPublished       = "poller.published"        // ICWS_OUT acknowledged the poller's publishes
	EdgeLive              = "edge.live"               // the edge received the message from NATS
	EdgeWritten           = "edge.written"            // the edge wrote the frame to the socket
	ClientRead            = "client.read"             // the client read the frame from the socket
	ClientVerified        = "client.verified"         // the client verified the frame's certificate
	ClientDelivered       = "client.delivered"        // the application received the message
)

// Enabled reports whether log records stage marks; a nil log records none.
func Enabled(ctx context.Context, log *slog.Logger) bool {
	return log != nil && log.Enabled(ctx, slog.LevelDebug)
}

// Mark records that a message reached stage now, if log records debug messages.
func Mark(ctx context.Context, log *slog.Logger, stage string) {
	if !Enabled(ctx, log) {
		return
	}
	log.LogAttrs(ctx, slog.LevelDebug, Message, slog.String("stage", stage), slog.Int64("at_us", time.Now().UnixMicro()))
}
