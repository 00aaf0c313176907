package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/nats-io/nats.go"
)

// Every stream, KV bucket, subject, key, Nats-Msg-Id and header that the roles share is named here
// (and, for names only edges use, in edge_names.go) and nowhere else. Each name that is built from
// parts has its parser next to its builder; a parser accepts exactly what its builder makes.

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
	// BucketLeases maps the lease keys (PollerLeaseKey, SubmitterLeaseKey, SubmitterLiveKey,
	// EdgeLeaseKey) to a LeaseRecord (JSON).
	BucketLeases = "icws_leases"
)

// ErrBadName means a subject, key or Nats-Msg-Id is not one that its builder makes.
var ErrBadName = errors.New("malformed name")

// badName reports why s is not a name of the given kind; s is cut short, it may come from anyone.
func badName(kind, s, why string) error {
	const show = 120
	if len(s) > show {
		s = s[:show] + "…"
	}
	return fmt.Errorf("%w: %s %q: %s", ErrBadName, kind, s, why)
}

// ClientRef is one client of one canister as subjects and keys name it.
type ClientRef struct {
	// Canister is the canister; CanisterText is its text form, the token in names.
	Canister     principal.Principal
	CanisterText string
	// Client is the client's token, protocol.ClientKey.Token().
	Client string
}

// parseCanister accepts a canister id in its canonical text form only, so that a parsed name
// rebuilds to the same string.
func parseCanister(tok string) (principal.Principal, error) {
	p, err := principal.Decode(tok)
	if err != nil {
		return principal.Principal{}, fmt.Errorf("canister id: %w", err)
	}
	if p.Encode() != tok {
		return principal.Principal{}, errors.New("canister id not in canonical form")
	}
	return p, nil
}

// validToken reports whether s can be one token of a subject or key: not empty, no separator,
// wildcard, space or control character.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == '*' || c == '>' || c <= ' ' || c == 0x7f:
			return false
		}
	}
	return true
}

// validTokens reports whether s is one or more valid tokens separated by single dots.
func validTokens(s string) bool {
	for tok := range strings.SplitSeq(s, ".") {
		if !validToken(tok) {
			return false
		}
	}
	return true
}

// parseClientRef reads the "<canister>.<client>" tail shared by client subjects and session keys.
func parseClientRef(canister, client string) (ClientRef, error) {
	c, err := parseCanister(canister)
	if err != nil {
		return ClientRef{}, err
	}
	if !validToken(client) {
		return ClientRef{}, errors.New("bad client token")
	}
	return ClientRef{Canister: c, CanisterText: canister, Client: client}, nil
}

// parsePartition accepts a partition number in the form strconv.Itoa writes.
func parsePartition(tok string) (int, bool) {
	n, err := strconv.Atoi(tok)
	return n, err == nil && n >= 0 && strconv.Itoa(n) == tok
}

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

// ParseInSubject reverses InSubject.
func ParseInSubject(subject string) (partition int, ref ClientRef, err error) {
	rest, ok := strings.CutPrefix(subject, subjectInPrefix)
	toks := strings.Split(rest, ".")
	if !ok || len(toks) != 3 {
		return 0, ClientRef{}, badName("ICWS_IN subject", subject, "want icws.in.<partition>.<canister>.<client>")
	}
	partition, ok = parsePartition(toks[0])
	if !ok {
		return 0, ClientRef{}, badName("ICWS_IN subject", subject, "bad partition")
	}
	ref, err = parseClientRef(toks[1], toks[2])
	if err != nil {
		return 0, ClientRef{}, badName("ICWS_IN subject", subject, err.Error())
	}
	return partition, ref, nil
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

// LiveCanisterFilter selects the live subjects of every client of a canister: an edge that
// subscribes once per canister instead of once per session.
func LiveCanisterFilter(canister string) string {
	return subjectLivePrefix + canister + ".*"
}

// LiveSessionKey gives the SessionKey a live subject belongs to, without allocating (the
// routing of every live message on an edge).
func LiveSessionKey(subject string) (string, bool) {
	return strings.CutPrefix(subject, subjectLivePrefix)
}

// ParseLiveSubject reverses LiveSubject.
func ParseLiveSubject(subject string) (ClientRef, error) {
	return parseClientSubject("live subject", subjectLivePrefix, subject)
}

// LiveSubjectOf is the live subject ICWS_OUT re-publishes a message stored on the ICWS_OUT
// subject out to (its RePublish maps icws.out.> to icws.live.>).
func LiveSubjectOf(out string) (string, bool) {
	rest, ok := strings.CutPrefix(out, subjectOutPrefix)
	return subjectLivePrefix + rest, ok
}

// OutSubject is where the poller publishes a client's certified messages: icws.out.<canister>.<client>.
func OutSubject(canister, client string) string {
	return subjectOutPrefix + canister + "." + client
}

// ParseOutSubject reverses OutSubject.
func ParseOutSubject(subject string) (ClientRef, error) {
	return parseClientSubject("ICWS_OUT subject", subjectOutPrefix, subject)
}

func parseClientSubject(kind, prefix, subject string) (ClientRef, error) {
	rest, ok := strings.CutPrefix(subject, prefix)
	canister, client, two := strings.Cut(rest, ".")
	if !ok || !two {
		return ClientRef{}, badName(kind, subject, "want "+prefix+"<canister>.<client>")
	}
	ref, err := parseClientRef(canister, client)
	if err != nil {
		return ClientRef{}, badName(kind, subject, err.Error())
	}
	return ref, nil
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

// SessionKey is the sessions-bucket key of a client of a canister: <canister>.<client>.
func SessionKey(canister, client string) string { return canister + "." + client }

// ParseSessionKey reverses SessionKey.
func ParseSessionKey(key string) (ClientRef, error) {
	canister, client, ok := strings.Cut(key, ".")
	if !ok {
		return ClientRef{}, badName("session key", key, "want <canister>.<client>")
	}
	ref, err := parseClientRef(canister, client)
	if err != nil {
		return ClientRef{}, badName("session key", key, err.Error())
	}
	return ref, nil
}

// Lease keys, all in BucketLeases.
const (
	pollerLeasePrefix    = "poller."
	submitterLeasePrefix = "submitter."
	submitterLivePrefix  = submitterLeasePrefix + "live."

	// PollerLeasesFilter watches every poller lease.
	PollerLeasesFilter = pollerLeasePrefix + "*"
	// SubmitterLeasesFilter watches every submitter partition and liveness lease.
	SubmitterLeasesFilter = submitterLeasePrefix + ">"
)

// PollerLeaseKey is the leases-bucket key of the poller lease for a canister: poller.<canister>.
func PollerLeaseKey(canister string) string { return pollerLeasePrefix + canister }

// ParsePollerLeaseKey reverses PollerLeaseKey, giving the canister's text form.
func ParsePollerLeaseKey(key string) (string, error) {
	canister, ok := strings.CutPrefix(key, pollerLeasePrefix)
	if !ok {
		return "", badName("poller lease key", key, "want poller.<canister>")
	}
	if _, err := parseCanister(canister); err != nil {
		return "", badName("poller lease key", key, err.Error())
	}
	return canister, nil
}

// SubmitterLeaseKey is the leases-bucket key of the submitter lease for an ICWS_IN partition:
// submitter.<partition>.
func SubmitterLeaseKey(partition int) string {
	return submitterLeasePrefix + strconv.Itoa(partition)
}

// ParseSubmitterLeaseKey reverses SubmitterLeaseKey.
func ParseSubmitterLeaseKey(key string) (int, error) {
	tok, ok := strings.CutPrefix(key, submitterLeasePrefix)
	if !ok {
		return 0, badName("submitter lease key", key, "want submitter.<partition>")
	}
	n, ok := parsePartition(tok)
	if !ok {
		return 0, badName("submitter lease key", key, "bad partition")
	}
	return n, nil
}

// SubmitterLiveKey is the leases-bucket key of a submitter process's liveness lease, which sizes
// every process's fair share of the partitions: submitter.live.<id> (the id may contain dots).
func SubmitterLiveKey(id string) string { return submitterLivePrefix + id }

// ParseSubmitterLiveKey reverses SubmitterLiveKey, giving the submitter's id.
func ParseSubmitterLiveKey(key string) (string, error) {
	id, ok := strings.CutPrefix(key, submitterLivePrefix)
	if !ok || !validTokens(id) {
		return "", badName("submitter liveness key", key, "want submitter.live.<id>")
	}
	return id, nil
}

// Nats-Msg-Ids of ICWS_IN messages. Each names the session (canister, client and the edge's
// session tag, which tells apart sessions that reuse a client key), so JetStream's de-duplication
// drops a re-sent copy of the same message and never a message of another session.
const (
	msgIDOpen    = "open"
	msgIDMessage = "msg"
	msgIDClose   = "close"
)

// OpenMsgID is the Nats-Msg-Id of a session's open envelope: open.<canister>.<client>.<session>.
func OpenMsgID(canister, client, session string) string {
	return msgIDOpen + "." + canister + "." + client + "." + session
}

// MessageMsgID is the Nats-Msg-Id of a session's ws_message envelope with the client's sequence
// number seq: msg.<canister>.<client>.<session>.<seq>.
func MessageMsgID(canister, client, session string, seq uint64) string {
	return msgIDMessage + "." + canister + "." + client + "." + session + "." + strconv.FormatUint(seq, 10)
}

// CloseMsgID is the Nats-Msg-Id of a session's close request: close.<canister>.<client>.<session>.
func CloseMsgID(canister, client, session string) string {
	return msgIDClose + "." + canister + "." + client + "." + session
}

// MsgID is what a Nats-Msg-Id of ICWS_IN names.
type MsgID struct {
	// Kind is KindOpen, KindMessage or KindClose.
	Kind string
	ClientRef
	// Session is the session tag.
	Session string
	// Seq is the client's sequence number (KindMessage only).
	Seq uint64
}

// SessionTagOfMsgID is the session tag of a Nats-Msg-Id of ICWS_IN, without checking the rest of
// it as ParseMsgID does.
func SessionTagOfMsgID(id string) (string, bool) {
	toks := strings.Split(id, ".")
	switch {
	case len(toks) == 5 && toks[0] == msgIDMessage, len(toks) == 4 && (toks[0] == msgIDOpen || toks[0] == msgIDClose):
		return toks[3], toks[3] != ""
	}
	return "", false
}

// ParseMsgID reverses OpenMsgID, MessageMsgID and CloseMsgID.
func ParseMsgID(id string) (MsgID, error) {
	toks := strings.Split(id, ".")
	var m MsgID
	switch {
	case len(toks) == 4 && toks[0] == msgIDOpen:
		m.Kind = KindOpen
	case len(toks) == 4 && toks[0] == msgIDClose:
		m.Kind = KindClose
	case len(toks) == 5 && toks[0] == msgIDMessage:
		m.Kind = KindMessage
		seq, err := strconv.ParseUint(toks[4], 10, 64)
		if err != nil || strconv.FormatUint(seq, 10) != toks[4] {
			return MsgID{}, badName("Nats-Msg-Id", id, "bad sequence number")
		}
		m.Seq = seq
	default:
		return MsgID{}, badName("Nats-Msg-Id", id, "want open|close.<canister>.<client>.<session> or msg.<canister>.<client>.<session>.<seq>")
	}
	ref, err := parseClientRef(toks[1], toks[2])
	if err != nil {
		return MsgID{}, badName("Nats-Msg-Id", id, err.Error())
	}
	if !validToken(toks[3]) {
		return MsgID{}, badName("Nats-Msg-Id", id, "bad session tag")
	}
	m.ClientRef, m.Session = ref, toks[3]
	return m, nil
}

// Headers.
const (
	// HeaderMsgID is JetStream's de-duplication header (OpenMsgID, MessageMsgID, CloseMsgID).
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

// LeaseRecord is the value of a lease in BucketLeases. Every version of every role reads and
// writes this form, so processes of different versions can share a bucket.
type LeaseRecord struct {
	Holder    string    `json:"holder"`
	ExpiresAt time.Time `json:"expires_at"`
}

// DecodeLeaseRecord reads a lease record's JSON value (a lease holder of any version wrote it).
func DecodeLeaseRecord(b []byte) (LeaseRecord, error) {
	var r LeaseRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return LeaseRecord{}, fmt.Errorf("lease record: %w", err)
	}
	return r, nil
}

// Expiry is when the lease, written at written (the bucket entry's time, from the server's clock),
// stops counting as held. ExpiresAt was computed with the holder's clock, so it counts for skew
// longer, the difference allowed between the clocks. No holder writes an expiry further than ttl
// (the TTL its readers share) past its write: one further ahead, from a clock far ahead or a bug,
// counts as if it were that far, so a lease nobody renews always ends.
func (r LeaseRecord) Expiry(written time.Time, ttl, skew time.Duration) time.Time {
	expires := r.ExpiresAt
	if limit := written.Add(ttl + skew); !written.IsZero() && expires.After(limit) {
		expires = limit
	}
	return expires.Add(skew)
}

// Live reports whether the lease is still held at now (Expiry).
func (r LeaseRecord) Live(now, written time.Time, ttl, skew time.Duration) bool {
	return now.Before(r.Expiry(written, ttl, skew))
}

// Poll kicks: a submitter that has a certified outcome of a client call announces it on the
// canister's kick subject (core NATS, no stream), so the active poller polls at once instead of at
// its next interval: a call's replies reach the client one round trip sooner.
const subjectKickPrefix = "icws.kick."

// SubjectKickAll is what pollers subscribe to.
const SubjectKickAll = subjectKickPrefix + "*"

// KickSubject is the kick subject of a canister: icws.kick.<canister>.
func KickSubject(canister string) string { return subjectKickPrefix + canister }

// ParseKickSubject reverses KickSubject, giving the canister's text form.
func ParseKickSubject(subject string) (string, error) {
	canister, ok := strings.CutPrefix(subject, subjectKickPrefix)
	if !ok {
		return "", badName("kick subject", subject, "want icws.kick.<canister>")
	}
	if _, err := parseCanister(canister); err != nil {
		return "", badName("kick subject", subject, err.Error())
	}
	return canister, nil
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
