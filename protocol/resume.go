package protocol

// The icws resume extension v1 (docs/RESUME.md): frames and close codes shared by the gateway's
// edge and the Go client.

// ResumeQueryParam, set to "1" on the WebSocket URL, opts a connection into the extension.
const ResumeQueryParam = "icws-resume"

// ResumeVersion is the version of the extension this module speaks.
const ResumeVersion = 1

// HeartbeatQueryParam, set to "1" next to ResumeQueryParam, asks the gateway for heartbeat frames
// (docs/RESUME.md §7): a client that cannot see WebSocket pings (a browser) can then tell a silent
// gateway from a quiet session. Gateways without heartbeats ignore it and announce no interval.
const HeartbeatQueryParam = "icws-heartbeat"

// Close codes of icws.
const (
	// CloseNotResumable: the session cannot be resumed; the client starts a new one.
	CloseNotResumable = 4100
	// CloseSlowClient: the connection's send queue overflowed; the session is detached (resumable).
	CloseSlowClient = 4101
	// CloseResumedElsewhere: a newer connection resumed this session.
	CloseResumedElsewhere = 4102
	// CloseResumeElsewhere: the gateway process lost its message bus; the session is intact and the
	// client resumes it at once on another gateway process (the one it reached stops serving).
	CloseResumeElsewhere = 4103
	// CloseUnresponsive: the client answered no WebSocket ping within the gateway's ping timeout;
	// a resumable session is detached as after any drop.
	CloseUnresponsive = 4104
)

// ResumeOffer is the icws_resume value of an opted-in handshake: a fresh session token.
type ResumeOffer struct {
	Version uint64 `cbor:"version"`
	Token   []byte `cbor:"token"`
	// HeartbeatMillis is the heartbeat interval of this connection in milliseconds, present only
	// when the client asked for heartbeats and the gateway sends them (0: none).
	HeartbeatMillis uint64 `cbor:"heartbeat_ms,omitempty"`
}

// Heartbeat is the frame a gateway sends to a connection that asked for heartbeats whenever it
// sent nothing else for the announced interval: {"icws_heartbeat": {}}.
type Heartbeat struct {
	Heartbeat struct{} `cbor:"icws_heartbeat"`
}

// ResumeClientKey is a client key as CBOR (principal bytes and nonce).
type ResumeClientKey struct {
	ClientPrincipal []byte `cbor:"client_principal"`
	ClientNonce     uint64 `cbor:"client_nonce"`
}

// ResumeRequest is the icws_resume value of a client's resume frame.
type ResumeRequest struct {
	Token      []byte          `cbor:"token"`
	CanisterID []byte          `cbor:"canister_id"`
	ClientKey  ResumeClientKey `cbor:"client_key"`
	// LastSeq is the last canister → client sequence number the client verified.
	LastSeq uint64 `cbor:"last_seq"`
}

// ResumedAnswer is the icws_resumed value of the edge's answer to a successful resume.
type ResumedAnswer struct {
	// LastClientSeq is the highest client sequence number the gateway has stored.
	LastClientSeq uint64 `cbor:"last_client_seq"`
}
