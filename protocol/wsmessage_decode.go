package protocol

import (
	"bytes"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol/internal/cborread"
)

// The fields of a WebsocketMessage as the CDK serialises them.
var (
	keyClientKey        = []byte("client_key")
	keySequenceNum      = []byte("sequence_num")
	keyTimestamp        = []byte("timestamp")
	keyIsServiceMessage = []byte("is_service_message")
	keyContent          = []byte("content")
	keyClientPrincipal  = []byte("client_principal")
	keyClientNonce      = []byte("client_nonce")
)

// decodeWebsocketMessageFast reads a WebsocketMessage in the shape every canister writes it:
// definite lengths, the known fields once each, nothing after the map. Anything else reports
// false, and the caller decodes with the general decoder, which decides whether it is valid: the
// fast path only ever accepts what that decoder accepts, with the same result (a fuzz target
// compares the two). It exists because the poller decodes every canister message it publishes,
// and the general decoder's reflection cost more than the rest of the publish.
func decodeWebsocketMessageFast(content []byte) (WebsocketMessage, bool) {
	body := StripSelfDescribe(content)
	r := cborread.New(body)
	n, err := r.MapHeader()
	if err != nil {
		return WebsocketMessage{}, false
	}
	var m WebsocketMessage
	var seen [5]bool
	for range n {
		key, err := r.Text()
		if err != nil {
			return WebsocketMessage{}, false
		}
		field := -1
		for i, k := range [][]byte{keyClientKey, keySequenceNum, keyTimestamp, keyIsServiceMessage, keyContent} {
			if bytes.Equal(key, k) {
				field = i
				break
			}
		}
		if field < 0 || seen[field] {
			return WebsocketMessage{}, false
		}
		seen[field] = true
		switch field {
		case 0:
			ck, ok := decodeClientKeyFast(r)
			if !ok {
				return WebsocketMessage{}, false
			}
			m.ClientKey = ck
		case 1:
			if m.SequenceNum, err = r.Uint(); err != nil {
				return WebsocketMessage{}, false
			}
		case 2:
			if m.Timestamp, err = r.Uint(); err != nil {
				return WebsocketMessage{}, false
			}
		case 3:
			// Only the one-byte simple values false (f4) and true (f5).
			if r.Remaining() == 0 {
				return WebsocketMessage{}, false
			}
			switch body[r.Offset()] {
			case 0xf4:
			case 0xf5:
				m.IsServiceMessage = true
			default:
				return WebsocketMessage{}, false
			}
			_, _, _ = r.Head()
		case 4:
			b, err := r.Bytes()
			if err != nil {
				return WebsocketMessage{}, false
			}
			m.Content = bytes.Clone(b) // the general decoder copies too: callers may keep it
			if m.Content == nil {
				m.Content = []byte{}
			}
		}
	}
	if r.End() != nil {
		return WebsocketMessage{}, false
	}
	return m, true
}

func decodeClientKeyFast(r *cborread.Reader) (ClientKey, bool) {
	n, err := r.MapHeader()
	if err != nil {
		return ClientKey{}, false
	}
	var ck ClientKey
	var seenPrincipal, seenNonce bool
	for range n {
		key, err := r.Text()
		if err != nil {
			return ClientKey{}, false
		}
		switch {
		case bytes.Equal(key, keyClientPrincipal) && !seenPrincipal:
			seenPrincipal = true
			b, err := r.Bytes()
			if err != nil {
				return ClientKey{}, false
			}
			raw := bytes.Clone(b)
			if raw == nil {
				raw = []byte{}
			}
			ck.ClientPrincipal = principal.Principal{Raw: raw}
		case bytes.Equal(key, keyClientNonce) && !seenNonce:
			seenNonce = true
			if ck.ClientNonce, err = r.Uint(); err != nil {
				return ClientKey{}, false
			}
		default:
			return ClientKey{}, false
		}
	}
	return ck, true
}
