package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// RequestID is the representation-independent hash of a request's content map (IC interface spec,
// "Request ids"). It is computed generically from whatever fields the sender put in, as the IC
// does, so fields unknown to us are hashed too.
type RequestID [32]byte

// RequestIDOfContent hashes the CBOR encoding of a content map.
func RequestIDOfContent(content []byte) (RequestID, error) {
	var v any
	if err := requestIDDecMode.Unmarshal(StripSelfDescribe(content), &v); err != nil {
		return RequestID{}, fmt.Errorf("request id: decode content: %w", err)
	}
	if _, ok := v.(map[any]any); !ok {
		return RequestID{}, errors.New("request id: content is not a map")
	}
	h, err := hashValue(v)
	if err != nil {
		return RequestID{}, fmt.Errorf("request id: %w", err)
	}
	return RequestID(h), nil
}

// RequestIDOfEnvelope hashes the content of an encoded envelope {content, sender_pubkey, ...}.
func RequestIDOfEnvelope(envelope []byte) (RequestID, error) {
	var e struct {
		Content cbor.RawMessage `cbor:"content"`
	}
	if err := icDecMode.Unmarshal(StripSelfDescribe(envelope), &e); err != nil {
		return RequestID{}, fmt.Errorf("request id: decode envelope: %w", err)
	}
	if len(e.Content) == 0 {
		return RequestID{}, errors.New("request id: envelope has no content")
	}
	return RequestIDOfContent(e.Content)
}

// HashOfMap is the representation-independent hash of a map with text keys.
func HashOfMap(m map[string]any) ([32]byte, error) {
	pairs := make([][]byte, 0, len(m))
	for k, v := range m {
		if v == nil {
			continue
		}
		kh := sha256.Sum256([]byte(k))
		vh, err := hashValue(v)
		if err != nil {
			return [32]byte{}, fmt.Errorf("field %q: %w", k, err)
		}
		pairs = append(pairs, append(kh[:], vh[:]...))
	}
	slices.SortFunc(pairs, bytes.Compare)
	return sha256.Sum256(bytes.Join(pairs, nil)), nil
}

func hashValue(v any) ([32]byte, error) {
	switch v := v.(type) {
	case []byte:
		return sha256.Sum256(v), nil
	case string:
		return sha256.Sum256([]byte(v)), nil
	case uint64:
		var b [binary.MaxVarintLen64]byte // an unsigned varint is LEB128
		return sha256.Sum256(b[:binary.PutUvarint(b[:], v)]), nil
	case int64:
		return sha256.Sum256(sleb128(big.NewInt(v))), nil
	case big.Int:
		if v.Sign() < 0 {
			return sha256.Sum256(sleb128(&v)), nil
		}
		return sha256.Sum256(uleb128(&v)), nil
	case cbor.Tag:
		if v.Number == 55799 {
			return hashValue(v.Content)
		}
		return [32]byte{}, fmt.Errorf("unsupported CBOR tag %d", v.Number)
	case []any:
		var cat []byte
		for _, e := range v {
			h, err := hashValue(e)
			if err != nil {
				return [32]byte{}, err
			}
			cat = append(cat, h[:]...)
		}
		return sha256.Sum256(cat), nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			s, ok := k.(string)
			if !ok {
				return [32]byte{}, fmt.Errorf("map key of type %T", k)
			}
			m[s] = e
		}
		return HashOfMap(m)
	case map[string]any:
		return HashOfMap(v)
	default:
		return [32]byte{}, fmt.Errorf("unsupported value of type %T", v)
	}
}

func uleb128(n *big.Int) []byte {
	n = new(big.Int).Set(n)
	var out []byte
	for {
		b := byte(new(big.Int).And(n, big.NewInt(0x7f)).Uint64())
		n.Rsh(n, 7)
		if n.Sign() == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

func sleb128(n *big.Int) []byte {
	n = new(big.Int).Set(n)
	var out []byte
	for {
		b := byte(new(big.Int).And(n, big.NewInt(0x7f)).Uint64())
		n.Rsh(n, 7) // arithmetic shift for negative values
		signBit := b&0x40 != 0
		if (n.Sign() == 0 && !signBit) || (n.Cmp(big.NewInt(-1)) == 0 && signBit) {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}
