package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/protocol/internal/cborwrite"
)

// SelfDescribeTag is the CBOR tag 55799 prefix (d9 d9 f7) that agent-js and serde_cbor may put in
// front of a CBOR document.
var SelfDescribeTag = []byte{0xd9, 0xd9, 0xf7}

// StripSelfDescribe removes a leading self-describe tag, if any.
func StripSelfDescribe(b []byte) []byte {
	return bytes.TrimPrefix(b, SelfDescribeTag)
}

// GatewayHandshake is the first frame the gateway sends: the raw bytes of its principal as a CBOR
// byte string, in a map prefixed with the self-describe tag, and on a connection that opted into
// the resume extension (docs/RESUME.md) the offer of a session token.
type GatewayHandshake struct {
	GatewayPrincipal []byte       `cbor:"gateway_principal"`
	Resume           *ResumeOffer `cbor:"icws_resume,omitempty"`
}

// Gateway is the gateway's principal.
func (h GatewayHandshake) Gateway() principal.Principal {
	return principal.Principal{Raw: h.GatewayPrincipal}
}

// Encode serialises the handshake frame.
func (h GatewayHandshake) Encode() ([]byte, error) {
	b, err := cbor.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode handshake: %w", err)
	}
	return append(append([]byte{}, SelfDescribeTag...), b...), nil
}

// DecodeHandshake reads a handshake frame. The principal must be a byte string, as the SDK
// requires; a resume offer must be of ResumeVersion with a token.
func DecodeHandshake(frame []byte) (GatewayHandshake, error) {
	var h GatewayHandshake
	if err := frameDecMode.Unmarshal(StripSelfDescribe(frame), &h); err != nil {
		return GatewayHandshake{}, fmt.Errorf("decode handshake: %w", err)
	}
	if len(h.GatewayPrincipal) == 0 || len(h.GatewayPrincipal) > MaxPrincipalBytes {
		return GatewayHandshake{}, fmt.Errorf("decode handshake: no gateway_principal of 1 to %d bytes", MaxPrincipalBytes)
	}
	if h.Resume != nil && (h.Resume.Version != ResumeVersion || len(h.Resume.Token) == 0) {
		return GatewayHandshake{}, fmt.Errorf("decode handshake: unsupported icws_resume offer (version %d, %d-byte token)", h.Resume.Version, len(h.Resume.Token))
	}
	return h, nil
}

// CanisterToClientMessage is every gateway → client frame after the handshake. The field order and
// byte strings match the Rust gateway's serde_cbor output; there is no self-describe tag.
type CanisterToClientMessage struct {
	Key     string `cbor:"key"`
	Content []byte `cbor:"content"`
	Cert    []byte `cbor:"cert"`
	Tree    []byte `cbor:"tree"`
}

// Encode serialises the frame.
func (m CanisterToClientMessage) Encode() ([]byte, error) {
	return m.AppendEncode(make([]byte, 0, m.encodedLen())), nil
}

// AppendEncode appends the frame's encoding (what Encode returns) to out: a map of the four
// fields in declaration order, each byte string definite (a nil one as null), as the CBOR library
// encodes the struct, without its reflection.
func (m CanisterToClientMessage) AppendEncode(out []byte) []byte {
	out = append(out, 0xa4)
	out = cborwrite.AppendHead(out, 3, uint64(len("key")))
	out = append(out, "key"...)
	out = cborwrite.AppendHead(out, 3, uint64(len(m.Key)))
	out = append(out, m.Key...)
	for _, f := range [...]struct {
		name  string
		value []byte
	}{{"content", m.Content}, {"cert", m.Cert}, {"tree", m.Tree}} {
		out = cborwrite.AppendHead(out, 3, uint64(len(f.name)))
		out = append(out, f.name...)
		if f.value == nil {
			out = append(out, 0xf6)
			continue
		}
		out = cborwrite.AppendHead(out, 2, uint64(len(f.value)))
		out = append(out, f.value...)
	}
	return out
}

// encodedLen is the length of the frame's encoding.
func (m CanisterToClientMessage) encodedLen() int {
	n := 1 + 9 + len("key") + len("content") + len("cert") + len("tree")
	for _, b := range [...]int{len(m.Key), len(m.Content), len(m.Cert), len(m.Tree)} {
		n += 9 + b
	}
	return n
}

// DecodeCanisterToClientMessage parses a gateway → client frame.
func DecodeCanisterToClientMessage(frame []byte) (CanisterToClientMessage, error) {
	var m CanisterToClientMessage
	if err := frameDecMode.Unmarshal(StripSelfDescribe(frame), &m); err != nil {
		return m, fmt.Errorf("decode canister message frame: %w", err)
	}
	if m.Key == "" || m.Content == nil || m.Cert == nil || m.Tree == nil {
		return m, errors.New("decode canister message frame: key, content, cert and tree are required")
	}
	return m, nil
}

// clientFrame is a client → gateway frame: {envelope: <envelope>} carrying a call or, as the first
// frame of a resuming connection, {icws_resume: ...}. The envelope stays raw so the gateway can
// forward it byte for byte.
type clientFrame struct {
	Envelope cbor.RawMessage `cbor:"envelope,omitempty"`
	Resume   *ResumeRequest  `cbor:"icws_resume,omitempty"`
}

// decodeClientFrame reads a client frame holding exactly one of envelope and icws_resume.
func decodeClientFrame(frame []byte) (clientFrame, error) {
	var f clientFrame
	if err := frameDecMode.Unmarshal(StripSelfDescribe(frame), &f); err != nil {
		return clientFrame{}, fmt.Errorf("decode client frame: %w", err)
	}
	switch {
	case len(f.Envelope) > 0 && f.Resume != nil:
		return clientFrame{}, errors.New("decode client frame: both envelope and icws_resume")
	case len(f.Envelope) == 0 && f.Resume == nil:
		return clientFrame{}, errors.New("decode client frame: no envelope")
	}
	return f, nil
}

// EncodeClientFrame wraps an encoded envelope as {envelope: ...} with the self-describe tag, as
// agent-js does.
func EncodeClientFrame(envelope []byte) ([]byte, error) {
	b, err := cbor.Marshal(clientFrame{Envelope: cbor.RawMessage(envelope)})
	if err != nil {
		return nil, fmt.Errorf("encode client frame: %w", err)
	}
	return append(append([]byte{}, SelfDescribeTag...), b...), nil
}

// FirstFrame is the first client frame of a connection: an envelope frame that opens a session,
// or a resume frame (docs/RESUME.md §1.4) that continues one.
type FirstFrame struct {
	// Envelope is the raw envelope of an {envelope} frame; nil for a resume frame.
	Envelope []byte
	// Resume is the request of an {icws_resume} frame; nil for an envelope frame.
	Resume *ResumeRequest
}

// DecodeFirstFrame tells a resume frame from an envelope frame without decoding the envelope.
// The fields of a resume request are not checked beyond their CBOR types.
func DecodeFirstFrame(frame []byte) (FirstFrame, error) {
	f, err := decodeClientFrame(frame)
	if err != nil {
		return FirstFrame{}, err
	}
	if f.Resume != nil {
		return FirstFrame{Resume: f.Resume}, nil
	}
	return FirstFrame{Envelope: []byte(f.Envelope)}, nil
}

// Envelope is a decoded view of a client's call envelope. Raw holds the exact bytes of the
// envelope value as the client sent them.
type Envelope struct {
	Raw     []byte
	Content EnvelopeContent
	// Signed reports whether sender_pubkey and sender_sig are present.
	Signed bool
}

// EnvelopeContent holds the fields of a call or query content map, in the order agent-js writes
// them: what the gateway reads of a client's envelope, and what SignEnvelope signs.
type EnvelopeContent struct {
	RequestType   string `cbor:"request_type"`
	CanisterID    []byte `cbor:"canister_id"`
	MethodName    string `cbor:"method_name"`
	Arg           []byte `cbor:"arg"`
	Sender        []byte `cbor:"sender"`
	IngressExpiry uint64 `cbor:"ingress_expiry"`
	Nonce         []byte `cbor:"nonce,omitempty"`
}

type envelopeView struct {
	Content      EnvelopeContent `cbor:"content"`
	SenderPubkey []byte          `cbor:"sender_pubkey"`
	SenderSig    []byte          `cbor:"sender_sig"`
}

// ErrNotCallEnvelope is returned for frames whose envelope is not a call.
var ErrNotCallEnvelope = errors.New("envelope is not a call")

// DecodeClientFrame parses a client frame {envelope} and returns the envelope with its raw bytes,
// unverified: a gateway uses IngressPolicy.VerifyClientFrame instead. Only call envelopes are
// accepted.
func DecodeClientFrame(frame []byte) (Envelope, error) {
	f, err := decodeClientFrame(frame)
	if err != nil {
		return Envelope{}, err
	}
	if f.Resume != nil {
		return Envelope{}, errors.New("decode client frame: icws_resume where an envelope is expected")
	}
	var v envelopeView
	if err := frameDecMode.Unmarshal(StripSelfDescribe(f.Envelope), &v); err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: %w", err)
	}
	if v.Content.RequestType != RequestCall {
		return Envelope{}, fmt.Errorf("decode envelope: %w (request_type %q)", ErrNotCallEnvelope, v.Content.RequestType)
	}
	return Envelope{
		Raw:     []byte(f.Envelope),
		Content: v.Content,
		Signed:  len(v.SenderPubkey) > 0 && len(v.SenderSig) > 0,
	}, nil
}

// VerifyClientFrame decodes a client frame {envelope} and verifies its envelope as a call with
// VerifyEnvelope. It returns the envelope (Raw as the client sent it, to be forwarded byte for
// byte; Content taken from the verified request) and the verified request. Errors are
// *IngressError; an undecodable frame is of kind IngressMalformed.
func (p IngressPolicy) VerifyClientFrame(frame []byte, now time.Time, prechecks ...Precheck) (Envelope, *Request, error) {
	f, err := decodeClientFrame(frame)
	if err != nil {
		return Envelope{}, nil, &IngressError{Kind: IngressMalformed, Msg: err.Error()}
	}
	if f.Resume != nil {
		return Envelope{}, nil, &IngressError{Kind: IngressMalformed, Msg: "decode client frame: icws_resume where an envelope is expected"}
	}
	req, err := p.VerifyEnvelope(f.Envelope, RequestCall, now, prechecks...)
	if err != nil {
		return Envelope{}, nil, err
	}
	env := Envelope{
		Raw: []byte(f.Envelope),
		Content: EnvelopeContent{
			RequestType:   req.Type,
			CanisterID:    req.Canister.Raw,
			MethodName:    req.Method,
			Arg:           req.Arg,
			Sender:        req.Sender.Raw,
			IngressExpiry: uint64(req.Expiry.UnixNano()),
			Nonce:         req.Nonce,
		},
		Signed: !req.Anonymous,
	}
	return env, req, nil
}

// EncodeWebsocketMessageCBOR serialises a canister message content as the CDK does: a CBOR map in
// declaration order behind the self-describe tag.
func EncodeWebsocketMessageCBOR(m WebsocketMessage) ([]byte, error) {
	b, err := cbor.Marshal(struct {
		ClientKey        cborClientKey `cbor:"client_key"`
		SequenceNum      uint64        `cbor:"sequence_num"`
		Timestamp        uint64        `cbor:"timestamp"`
		IsServiceMessage bool          `cbor:"is_service_message"`
		Content          []byte        `cbor:"content"`
	}{
		ClientKey:        cborClientKey{ClientPrincipal: m.ClientKey.ClientPrincipal.Raw, ClientNonce: m.ClientKey.ClientNonce},
		SequenceNum:      m.SequenceNum,
		Timestamp:        m.Timestamp,
		IsServiceMessage: m.IsServiceMessage,
		Content:          m.Content,
	})
	if err != nil {
		return nil, fmt.Errorf("encode websocket message: %w", err)
	}
	return append(append([]byte{}, SelfDescribeTag...), b...), nil
}

type cborClientKey struct {
	ClientPrincipal []byte `cbor:"client_principal"`
	ClientNonce     uint64 `cbor:"client_nonce"`
}

// DecodeWebsocketMessageCBOR parses the content of a canister message without altering it.
func DecodeWebsocketMessageCBOR(content []byte) (WebsocketMessage, error) {
	if m, ok := decodeWebsocketMessageFast(content); ok {
		return m, nil
	}
	return decodeWebsocketMessageGeneral(content)
}

// decodeWebsocketMessageGeneral decodes any CBOR encoding of a WebsocketMessage the IC accepts.
func decodeWebsocketMessageGeneral(content []byte) (WebsocketMessage, error) {
	var v struct {
		ClientKey        cborClientKey `cbor:"client_key"`
		SequenceNum      uint64        `cbor:"sequence_num"`
		Timestamp        uint64        `cbor:"timestamp"`
		IsServiceMessage bool          `cbor:"is_service_message"`
		Content          []byte        `cbor:"content"`
	}
	if err := icDecMode.Unmarshal(StripSelfDescribe(content), &v); err != nil {
		return WebsocketMessage{}, fmt.Errorf("decode websocket message: %w", err)
	}
	return WebsocketMessage{
		ClientKey:        ClientKey{ClientPrincipal: principal.Principal{Raw: v.ClientKey.ClientPrincipal}, ClientNonce: v.ClientKey.ClientNonce},
		SequenceNum:      v.SequenceNum,
		Timestamp:        v.Timestamp,
		IsServiceMessage: v.IsServiceMessage,
		Content:          v.Content,
	}, nil
}
