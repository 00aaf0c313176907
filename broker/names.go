package broker

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Every stream, KV bucket, subject and header that the roles share is named here and nowhere else.

// Streams.
const (
	// StreamIn holds client envelopes and close requests on their way to the canister.
	StreamIn = "ICWS_IN"
	// StreamOut holds certified canister messages, one per canister message, per client subject.
	StreamOut = "ICWS_OUT"
)

// KV buckets.
const (
	// BucketSessions maps SessionKey(canister, client) to a SessionRecord (JSON).
	BucketSessions = "icws_sessions"
	// BucketCursors maps a canister id to its CursorRecord (JSON).
	BucketCursors = "icws_cursors"
	// BucketLeases maps PollerLeaseKey / SubmitterLeaseKey to a LeaseRecord (JSON).
	BucketLeases = "icws_leases"
)

// Subject prefixes. Tokens: canister = principal text, client = protocol.ClientKey.Token().
const (
	subjectInPrefix   = "icws.in."
	subjectOutPrefix  = "icws.out."
	subjectLivePrefix = "icws.live."
	// SubjectInAll and SubjectOutAll are the streams' subject filters.
	SubjectInAll  = subjectInPrefix + ">"
	SubjectOutAll = subjectOutPrefix + ">"
)

// InSubject is where an edge publishes a client's envelopes and close request:
// icws.in.<partition>.<canister>.<client>.
func InSubject(partition int, canister, client string) string {
	return subjectInPrefix + strconv.Itoa(partition) + "." + canister + "." + client
}

// InPartitionFilter selects one partition of ICWS_IN.
func InPartitionFilter(partition int) string {
	return subjectInPrefix + strconv.Itoa(partition) + ".>"
}

// LiveSubject is where ICWS_OUT re-publishes a client's message once it is stored: edges deliver
// live from here, so a client never sees a message the stream could lose (a publish that reached
// subscribers but not the stream's quorum would otherwise make the client ahead of the history it
// may later resume from).
func LiveSubject(canister, client string) string {
	return subjectLivePrefix + canister + "." + client
}

// OutSubject is where the poller publishes a client's certified messages: icws.out.<canister>.<client>.
func OutSubject(canister, client string) string {
	return subjectOutPrefix + canister + "." + client
}

// Partition assigns a client to one of n partitions of ICWS_IN; all of a client's envelopes go to
// the same partition, so one submitter at a time relays them in order.
func Partition(canister, client string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(canister))
	h.Write([]byte{'.'})
	h.Write([]byte(client))
	return int(h.Sum32() % uint32(n))
}

// SessionKey is the sessions-bucket key of a client of a canister.
func SessionKey(canister, client string) string { return canister + "." + client }

// PollerLeaseKey is the leases-bucket key of the poller lease for a canister.
func PollerLeaseKey(canister string) string { return "poller." + canister }

// SubmitterLeaseKey is the leases-bucket key of the submitter lease for an ICWS_IN partition.
func SubmitterLeaseKey(partition int) string { return "submitter." + strconv.Itoa(partition) }

// Msg-Ids of ICWS_IN: "<kind>.<canister>.<client>.<session tag>[.<client seq>]". The session tag
// (SessionRecord.Tag) keeps a new session's messages from being de-duplicated against an earlier
// session of the same client key.

// OpenMsgID is the Msg-Id of a session's ws_open envelope.
func OpenMsgID(canister, client, tag string) string {
	return "open." + canister + "." + client + "." + tag
}

// MessageMsgID is the Msg-Id of a session's ws_message envelope with client sequence number seq.
func MessageMsgID(canister, client, tag string, seq uint64) string {
	return "msg." + canister + "." + client + "." + tag + "." + strconv.FormatUint(seq, 10)
}

// SessionTagOfMsgID returns the session tag of a Msg-Id built by OpenMsgID, MessageMsgID or
// CloseMsgID.
func SessionTagOfMsgID(id string) (string, bool) {
	toks := strings.Split(id, ".")
	switch {
	case len(toks) == 5 && toks[0] == "msg", len(toks) == 4 && (toks[0] == "open" || toks[0] == "close"):
		return toks[3], toks[3] != ""
	}
	return "", false
}

// CloseMsgID is the Msg-Id of a session's close request.
func CloseMsgID(canister, client, tag string) string {
	return "close." + canister + "." + client + "." + tag
}

// Headers.
const (
	// HeaderMsgID is JetStream's de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderKind says what an ICWS_IN message is: KindOpen, KindMessage or KindClose.
	HeaderKind = "Icws-Kind"
	// HeaderClientSeq is the client's sequence number of a ws_message envelope (ICWS_IN).
	HeaderClientSeq = "Icws-Client-Seq"
	// HeaderCloseReason says why a session ends: on an ICWS_IN close request (KindClose), the
	// reason an edge asks for ws_close; on a canister failure notice or a session close request,
	// the close reason the edge gives the client.
	HeaderCloseReason = "Icws-Close-Reason"
	// HeaderClientKey is the client token of an ICWS_OUT message.
	HeaderClientKey = "Icws-Client-Key"
	// HeaderSeq is the canister → client sequence number of an ICWS_OUT message.
	HeaderSeq = "Icws-Seq"
	// HeaderNonce is the canister queue nonce of an ICWS_OUT message.
	HeaderNonce = "Icws-Nonce"
	// HeaderEpoch names the canister queue generation (bumped on every detected queue reset).
	HeaderEpoch = "Icws-Epoch"
	// HeaderSessionTag carries SessionRecord.Tag on an ICWS_IN open message and on an open result,
	// so a submitter confirms or refuses exactly the session that sent the envelope.
	HeaderSessionTag = "Icws-Session-Tag"
)

// Kinds of ICWS_IN messages.
const (
	KindOpen    = "open"
	KindMessage = "message"
	KindClose   = "close"
)

// CursorRecord is the value kept per canister in BucketCursors.
type CursorRecord struct {
	// NextNonce is the first queue nonce not yet published.
	NextNonce uint64 `json:"next_nonce"`
	// Epoch counts detected queue resets.
	Epoch uint64 `json:"epoch"`
	// LastKey and LastContentHash identify the last published message, to recognise a reset queue.
	LastKey         string `json:"last_key,omitempty"`
	LastContentHash string `json:"last_content_hash,omitempty"`
}

// LeaseRecord is the value of a lease in BucketLeases.
type LeaseRecord struct {
	Holder    string    `json:"holder"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Poll kicks: a submitter that has a certified outcome of a client call announces it on the
// canister's kick subject (core NATS, no stream), so the active poller polls at once instead of at
// its next interval: a call's replies reach the client one round trip sooner.
const subjectKickPrefix = "icws.kick."

// SubjectKickAll is what pollers subscribe to.
const SubjectKickAll = subjectKickPrefix + "*"

// KickSubject is the kick subject of a canister.
func KickSubject(canister string) string { return subjectKickPrefix + canister }

// KickCanister extracts the canister from a kick subject.
func KickCanister(subject string) (string, bool) {
	c, ok := strings.CutPrefix(subject, subjectKickPrefix)
	return c, ok && c != ""
}

// OutLeaderElectedAdvisory is JetStream's advisory for a new ICWS_OUT leader. Entries a dying
// leader committed but had not applied are applied by its successor without being re-published to
// the live subjects, so edges re-read the stream when it fires.
const OutLeaderElectedAdvisory = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + StreamOut

// Open results: the submitter that relayed a session's ws_open tells the session's edge how the
// IC answered (core NATS; the session record says the same, so a lost message only costs the
// edge a re-read). Body = SessionKey; headers HeaderSessionTag, HeaderOpenOutcome and, when
// refused, HeaderOpenReason.
const subjectOpenResultPrefix = "icws.opened."

// OpenResultSubject is where the submitter reports ws_open outcomes to edge id.
func OpenResultSubject(edgeID string) string { return subjectOpenResultPrefix + edgeID }

// Open result headers and outcomes.
const (
	HeaderOpenOutcome = "Icws-Open-Outcome"
	HeaderOpenReason  = "Icws-Open-Reason"
	OpenConfirmed     = "confirmed"
	OpenRefused       = "refused"
)

// Canister failures: the active poller of a canister that has answered ws_get_messages with
// nothing but permanent errors (stopped, missing, trapping, undecodable) for ICWS_POLL_FAIL_CLOSE
// announces it to every edge (core NATS). Edges close the canister's sessions that opened before
// HeaderFailedAt, with HeaderCloseReason as the close reason. The poller repeats the notice while
// the canister still has sessions, so an edge that missed one acts on the next.
const subjectCanisterFailedPrefix = "icws.failed."

// SubjectCanisterFailedAll is what edges subscribe to.
const SubjectCanisterFailedAll = subjectCanisterFailedPrefix + "*"

// HeaderFailedAt is when the poller declared a canister failed (RFC 3339, nanoseconds, UTC).
const HeaderFailedAt = "Icws-Failed-At"

// CanisterFailedMsg builds the failure notice of canister: declared at, closing with reason.
func CanisterFailedMsg(canister string, at time.Time, reason string) *nats.Msg {
	msg := nats.NewMsg(subjectCanisterFailedPrefix + canister)
	msg.Header.Set(HeaderFailedAt, at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(HeaderCloseReason, reason)
	return msg
}

// ParseCanisterFailed reads a failure notice built by CanisterFailedMsg.
func ParseCanisterFailed(msg *nats.Msg) (canister string, at time.Time, reason string, err error) {
	canister, ok := strings.CutPrefix(msg.Subject, subjectCanisterFailedPrefix)
	if !ok || canister == "" || strings.ContainsAny(canister, ".*>") {
		return "", time.Time{}, "", fmt.Errorf("canister failure notice on subject %q", msg.Subject)
	}
	at, err = time.Parse(time.RFC3339Nano, msg.Header.Get(HeaderFailedAt))
	if err != nil {
		return "", time.Time{}, "", fmt.Errorf("canister failure notice for %s: %s: %w", canister, HeaderFailedAt, err)
	}
	return canister, at, msg.Header.Get(HeaderCloseReason), nil
}

// Session close requests: a submitter that gives up on a session (its client sends faster than
// the canister executes, so its queued envelopes would expire) asks the session's edge to close the
// socket (core NATS). The edge's teardown then closes the session as any other close does. A lost
// request is sent again with the client's next envelope, which the submitter drops.
const subjectSessionClosePrefix = "icws.close."

// SessionCloseMsg builds the request to edge edgeID to close the session key (SessionKey) whose
// tag (SessionRecord.Tag) is tag, with reason as the close reason.
func SessionCloseMsg(edgeID, key, tag, reason string) *nats.Msg {
	msg := nats.NewMsg(SessionCloseSubject(edgeID))
	msg.Data = []byte(key)
	msg.Header.Set(HeaderSessionTag, tag)
	msg.Header.Set(HeaderCloseReason, reason)
	return msg
}

// SessionCloseSubject is where edge edgeID takes session close requests.
func SessionCloseSubject(edgeID string) string { return subjectSessionClosePrefix + edgeID }

// ParseSessionClose reads a request built by SessionCloseMsg.
func ParseSessionClose(msg *nats.Msg) (key, tag, reason string) {
	return string(msg.Data), msg.Header.Get(HeaderSessionTag), msg.Header.Get(HeaderCloseReason)
}
