package edge

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Resume extension frames (docs/RESUME.md).

type resumeOffer struct {
	Version uint64 `cbor:"version"`
	Token   []byte `cbor:"token"`
}

type resumeHandshake struct {
	GatewayPrincipal []byte      `cbor:"gateway_principal"`
	Resume           resumeOffer `cbor:"icws_resume"`
}

type resumeClientKey struct {
	ClientPrincipal []byte `cbor:"client_principal"`
	ClientNonce     uint64 `cbor:"client_nonce"`
}

type resumeRequest struct {
	Token      []byte          `cbor:"token"`
	CanisterID []byte          `cbor:"canister_id"`
	ClientKey  resumeClientKey `cbor:"client_key"`
	LastSeq    uint64          `cbor:"last_seq"`
}

type resumedBody struct {
	LastClientSeq uint64 `cbor:"last_client_seq"`
}

type resumedFrame struct {
	Resumed resumedBody `cbor:"icws_resumed"`
}

// firstFrame tells a resume frame from an envelope frame without decoding the envelope.
type firstFrame struct {
	Envelope cbor.RawMessage `cbor:"envelope"`
	Resume   *resumeRequest  `cbor:"icws_resume"`
}

func encodeResumeHandshake(gateway []byte, token []byte) ([]byte, error) {
	b, err := cbor.Marshal(resumeHandshake{GatewayPrincipal: gateway, Resume: resumeOffer{Version: 1, Token: token}})
	if err != nil {
		return nil, fmt.Errorf("encode resume handshake: %w", err)
	}
	return append(append([]byte{}, protocol.SelfDescribeTag...), b...), nil
}

func encodeResumed(lastClientSeq uint64) ([]byte, error) {
	b, err := cbor.Marshal(resumedFrame{Resumed: resumedBody{LastClientSeq: lastClientSeq}})
	if err != nil {
		return nil, fmt.Errorf("encode resumed frame: %w", err)
	}
	return b, nil
}
