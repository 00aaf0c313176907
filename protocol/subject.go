package protocol

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/aviate-labs/agent-go/principal"
)

// Token is the subject-safe form of a client key, "<principal text>_<nonce>". Principal text uses
// only [a-z0-9-], so the token never contains '.', '*', '>' or white space.
func (k ClientKey) Token() string {
	return k.ClientPrincipal.Encode() + "_" + strconv.FormatUint(k.ClientNonce, 10)
}

// ParseClientKeyToken reverses ClientKey.Token.
func ParseClientKeyToken(s string) (ClientKey, error) {
	i := strings.LastIndexByte(s, '_')
	if i <= 0 {
		return ClientKey{}, fmt.Errorf("parse client key %q: missing '_'", s)
	}
	p, err := principal.Decode(s[:i])
	if err != nil {
		return ClientKey{}, fmt.Errorf("parse client key %q: %w", s, err)
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return ClientKey{}, fmt.Errorf("parse client key %q: nonce: %w", s, err)
	}
	return ClientKey{ClientPrincipal: p, ClientNonce: n}, nil
}

// MessageKeyNonce returns the queue nonce in a canister message key "<gateway>_<20-digit nonce>".
func MessageKeyNonce(key string) (uint64, error) {
	i := strings.LastIndexByte(key, '_')
	if i < 0 {
		return 0, fmt.Errorf("message key %q: missing '_'", key)
	}
	n, err := strconv.ParseUint(key[i+1:], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("message key %q: %w", key, err)
	}
	return n, nil
}

// MessageKey formats the canister's queue key for a gateway and nonce.
func MessageKey(gateway principal.Principal, nonce uint64) string {
	return fmt.Sprintf("%s_%020d", gateway.Encode(), nonce)
}
