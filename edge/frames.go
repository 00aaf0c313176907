package edge

import (
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/icws/icws/protocol"
)

// Resume extension frames (docs/RESUME.md).

type (
	resumeOffer     = protocol.ResumeOffer
	resumeClientKey = protocol.ResumeClientKey
	resumeRequest   = protocol.ResumeRequest
	resumedBody     = protocol.ResumedAnswer
)

type resumeHandshake struct {
	GatewayPrincipal []byte      `cbor:"gateway_principal"`
	Resume           resumeOffer `cbor:"icws_resume"`
}

type resumedFrame struct {
	Resumed resumedBody `cbor:"icws_resumed"`
}

// firstFrame tells a resume frame from an envelope frame without decoding the envelope.
type firstFrame struct {
	Envelope cbor.RawMessage `cbor:"envelope"`
	Resume   *resumeRequest  `cbor:"icws_resume"`
}

// encodeResumeHandshake encodes the opted-in handshake; a positive heartbeat announces the
// connection's heartbeat interval.
func encodeResumeHandshake(gateway []byte, token []byte, heartbeat time.Duration) ([]byte, error) {
	offer := resumeOffer{Version: protocol.ResumeVersion, Token: token}
	if heartbeat > 0 {
		offer.HeartbeatMillis = uint64(heartbeat.Milliseconds())
	}
	b, err := cbor.Marshal(resumeHandshake{GatewayPrincipal: gateway, Resume: offer})
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
