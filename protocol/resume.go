package protocol

// The icws resume extension v1 (docs/RESUME.md): frames and close codes shared by the gateway's
// edge and the Go client.

// ResumeQueryParam, set to "1" on the WebSocket URL, opts a connection into the extension.
const ResumeQueryParam = "icws-resume"

// ResumeVersion is the version of the extension this module speaks.
const ResumeVersion = 1

// Close codes of icws.
const (
	// CloseNotResumable: the session cannot be resumed; the client starts a new one.
	CloseNotResumable = 4100
	// CloseSlowClient: the connection's send queue overflowed; the session is detached (resumable).
	CloseSlowClient = 4101
	// CloseResumedElsewhere: a newer connection resumed this session.
	CloseResumedElsewhere = 4102
)

// ResumeOffer is the icws_resume value of an opted-in handshake: a fresh session token.
type ResumeOffer struct {
	Version uint64 `cbor:"version"`
	Token   []byte `cbor:"token"`
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
