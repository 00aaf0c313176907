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

// Close codes of icws (resume extension and edge policy).
const (
	CloseNotResumable     = protocol.CloseNotResumable
	CloseSlowClient       = protocol.CloseSlowClient
	CloseResumedElsewhere = protocol.CloseResumedElsewhere
)

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
