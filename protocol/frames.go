package protocol

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"
)

// SelfDescribeTag is the CBOR tag 55799 prefix (d9 d9 f7) that agent-js and serde_cbor may put in
// front of a CBOR document.
var SelfDescribeTag = []byte{0xd9, 0xd9, 0xf7}

// StripSelfDescribe removes a leading self-describe tag, if any.
func StripSelfDescribe(b []byte) []byte {
	return bytes.TrimPrefix(b, SelfDescribeTag)
}

// GatewayHandshake is the first frame the gateway sends: the raw bytes of its principal as a CBOR
// byte string, in a map prefixed with the self-describe tag.
type GatewayHandshake struct {
	GatewayPrincipal []byte `cbor:"gateway_principal"`
}

// EncodeHandshake builds the handshake frame for a gateway principal.
func EncodeHandshake(gateway principal.Principal) ([]byte, error) {
	b, err := cbor.Marshal(GatewayHandshake{GatewayPrincipal: gateway.Raw})
	if err != nil {
		return nil, fmt.Errorf("encode handshake: %w", err)
	}
	return append(append([]byte{}, SelfDescribeTag...), b...), nil
}

// DecodeHandshake reads a handshake frame; the principal must be a byte string.
func DecodeHandshake(frame []byte) (principal.Principal, error) {
	var h GatewayHandshake
	if err := cbor.Unmarshal(StripSelfDescribe(frame), &h); err != nil {
		return principal.Principal{}, fmt.Errorf("decode handshake: %w", err)
	}
	if len(h.GatewayPrincipal) == 0 {
		return principal.Principal{}, errors.New("decode handshake: no gateway_principal")
	}
	return principal.Principal{Raw: h.GatewayPrincipal}, nil
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
	b, err := cbor.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode canister message frame: %w", err)
	}
	return b, nil
}

// DecodeCanisterToClientMessage parses a gateway → client frame.
func DecodeCanisterToClientMessage(frame []byte) (CanisterToClientMessage, error) {
	var m CanisterToClientMessage
	if err := cbor.Unmarshal(StripSelfDescribe(frame), &m); err != nil {
		return m, fmt.Errorf("decode canister message frame: %w", err)
	}
	if m.Key == "" || m.Content == nil || m.Cert == nil || m.Tree == nil {
		return m, errors.New("decode canister message frame: key, content, cert and tree are required")
	}
	return m, nil
}

// clientFrame is the client → gateway frame {envelope: <envelope>}; the envelope stays raw so the
// gateway can forward it byte for byte.
type clientFrame struct {
	Envelope cbor.RawMessage `cbor:"envelope"`
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

// Envelope is a decoded view of a client's signed call envelope. Raw holds the exact bytes of the
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

// DecodeClientFrame parses a client frame {envelope} and returns the envelope with its raw bytes.
// Only call envelopes are accepted.
func DecodeClientFrame(frame []byte) (Envelope, error) {
	var f clientFrame
	if err := cbor.Unmarshal(StripSelfDescribe(frame), &f); err != nil {
		return Envelope{}, fmt.Errorf("decode client frame: %w", err)
	}
	if len(f.Envelope) == 0 {
		return Envelope{}, errors.New("decode client frame: no envelope")
	}
	var v envelopeView
	if err := cbor.Unmarshal(StripSelfDescribe(f.Envelope), &v); err != nil {
		return Envelope{}, fmt.Errorf("decode envelope: %w", err)
	}
	if v.Content.RequestType != "call" {
		return Envelope{}, fmt.Errorf("decode envelope: %w (request_type %q)", ErrNotCallEnvelope, v.Content.RequestType)
	}
	return Envelope{
		Raw:     []byte(f.Envelope),
		Content: v.Content,
		Signed:  len(v.SenderPubkey) > 0 && len(v.SenderSig) > 0,
	}, nil
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
	var v struct {
		ClientKey        cborClientKey `cbor:"client_key"`
		SequenceNum      uint64        `cbor:"sequence_num"`
		Timestamp        uint64        `cbor:"timestamp"`
		IsServiceMessage bool          `cbor:"is_service_message"`
		Content          []byte        `cbor:"content"`
	}
	if err := cbor.Unmarshal(StripSelfDescribe(content), &v); err != nil {
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
