package protocol

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// The icws resume extension v1 (docs/RESUME.md): frames, their codecs and close codes, shared by
// the gateway's edge and the Go client. The offer travels in the handshake (GatewayHandshake), the
// request as a first client frame (DecodeFirstFrame).

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

// Encode serialises the heartbeat frame (untagged, like the resume answer).
func (h Heartbeat) Encode() ([]byte, error) {
	b, err := cbor.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode heartbeat: %w", err)
	}
	return b, nil
}

// IsHeartbeat tells a heartbeat frame from every other gateway frame; keys a later gateway adds
// beside icws_heartbeat are ignored.
func IsHeartbeat(frame []byte) bool {
	var h struct {
		Heartbeat *cbor.RawMessage `cbor:"icws_heartbeat"`
	}
	return frameDecMode.Unmarshal(StripSelfDescribe(frame), &h) == nil && h.Heartbeat != nil
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

// Encode serialises the resume frame {icws_resume: r} with the self-describe tag.
func (r ResumeRequest) Encode() ([]byte, error) {
	b, err := cbor.Marshal(clientFrame{Resume: &r})
	if err != nil {
		return nil, fmt.Errorf("encode resume frame: %w", err)
	}
	return append(append([]byte{}, SelfDescribeTag...), b...), nil
}

// ResumedAnswer is the icws_resumed value of the edge's answer to a successful resume.
type ResumedAnswer struct {
	// LastClientSeq is the highest client sequence number the gateway has stored.
	LastClientSeq uint64 `cbor:"last_client_seq"`
}

// resumedFrame is the gateway's answer to a successful resume: {icws_resumed: ...}.
type resumedFrame struct {
	Resumed *ResumedAnswer `cbor:"icws_resumed"`
}

// Encode serialises the frame {icws_resumed: a}, without the self-describe tag.
func (a ResumedAnswer) Encode() ([]byte, error) {
	b, err := cbor.Marshal(resumedFrame{Resumed: &a})
	if err != nil {
		return nil, fmt.Errorf("encode resumed frame: %w", err)
	}
	return b, nil
}

// DecodeResumed reads the gateway's answer to a resume frame.
func DecodeResumed(frame []byte) (ResumedAnswer, error) {
	var f resumedFrame
	if err := frameDecMode.Unmarshal(StripSelfDescribe(frame), &f); err != nil {
		return ResumedAnswer{}, fmt.Errorf("decode resumed frame: %w", err)
	}
	if f.Resumed == nil {
		return ResumedAnswer{}, errors.New("decode resumed frame: no icws_resumed")
	}
	return *f.Resumed, nil
}
