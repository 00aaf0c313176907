package client

import (
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Frames of the icws resume extension v1 (docs/RESUME.md).

// ResumeQueryParam opts a connection into the icws resume extension.
const ResumeQueryParam = protocol.ResumeQueryParam

// HeartbeatQueryParam asks the gateway for heartbeat frames (Config.HeartbeatSilence).
const HeartbeatQueryParam = protocol.HeartbeatQueryParam

// Close codes of icws (resume extension and edge policy).
const (
	CloseNotResumable     = protocol.CloseNotResumable
	CloseSlowClient       = protocol.CloseSlowClient
	CloseResumedElsewhere = protocol.CloseResumedElsewhere
	// CloseResumeElsewhere: the gateway process lost its message bus; the client resumes at once.
	CloseResumeElsewhere = protocol.CloseResumeElsewhere
	// CloseUnresponsive: the gateway got no answer to its ping; the client resumes.
	CloseUnresponsive = protocol.CloseUnresponsive
)

// isHeartbeat tells a heartbeat frame ({"icws_heartbeat": …}) from every other gateway frame. A
// canister message always carries a certificate, so only small frames are decoded for the check.
func isHeartbeat(frame []byte) bool {
	if len(frame) > maxHeartbeatFrame {
		return false
	}
	var h struct {
		Heartbeat *cbor.RawMessage `cbor:"icws_heartbeat"`
	}
	return cbor.Unmarshal(protocol.StripSelfDescribe(frame), &h) == nil && h.Heartbeat != nil
}

// maxHeartbeatFrame is the largest frame checked for being a heartbeat: the frame is 17 bytes
// today; the margin leaves room for keys a later gateway may add.
const maxHeartbeatFrame = 256

// handshake is the gateway's first frame, with the optional resume offer.
type handshake struct {
	GatewayPrincipal []byte        `cbor:"gateway_principal"`
	Resume           *resumeOffer  `cbor:"icws_resume"`
	Resumed          *resumeAnswer `cbor:"icws_resumed"`
}

type (
	resumeOffer   = protocol.ResumeOffer
	resumeAnswer  = protocol.ResumedAnswer
	resumeKey     = protocol.ResumeClientKey
	resumeRequest = protocol.ResumeRequest
)

func decodeHandshake(frame []byte) (principal.Principal, *resumeOffer, error) {
	var h handshake
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(frame), &h); err != nil {
		return principal.Principal{}, nil, fmt.Errorf("decode handshake: %w", err)
	}
	if len(h.GatewayPrincipal) == 0 {
		return principal.Principal{}, nil, errors.New("decode handshake: no gateway_principal byte string")
	}
	if h.Resume != nil && (h.Resume.Version != protocol.ResumeVersion || len(h.Resume.Token) == 0) {
		return principal.Principal{}, nil, fmt.Errorf("decode handshake: unsupported icws_resume offer (version %d, %d-byte token)", h.Resume.Version, len(h.Resume.Token))
	}
	return principal.Principal{Raw: h.GatewayPrincipal}, h.Resume, nil
}

func encodeResumeRequest(token []byte, canister principal.Principal, key protocol.ClientKey, lastSeq uint64) ([]byte, error) {
	b, err := cbor.Marshal(struct {
		Resume resumeRequest `cbor:"icws_resume"`
	}{resumeRequest{
		Token:      token,
		CanisterID: canister.Raw,
		ClientKey:  resumeKey{ClientPrincipal: key.ClientPrincipal.Raw, ClientNonce: key.ClientNonce},
		LastSeq:    lastSeq,
	}})
	if err != nil {
		return nil, fmt.Errorf("encode resume frame: %w", err)
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), b...), nil
}

func decodeResumed(frame []byte) (uint64, error) {
	var h handshake
	if err := cbor.Unmarshal(protocol.StripSelfDescribe(frame), &h); err != nil {
		return 0, fmt.Errorf("decode resume answer: %w", err)
	}
	if h.Resumed == nil {
		return 0, errors.New("decode resume answer: no icws_resumed")
	}
	return h.Resumed.LastClientSeq, nil
}
