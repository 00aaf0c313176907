package protocol

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// mainnetHosts are the IC boundary node hosts for which agents use the built-in mainnet root key
// and never fetch one.
var mainnetHosts = []string{"icp-api.io", "icp0.io", "ic0.app"}

// IsMainnetHost reports whether host (without scheme or path) is a mainnet boundary node host.
func IsMainnetHost(host string) bool { return slices.Contains(mainnetHosts, host) }

// ErrNoRootKey is returned by RootKeyOfStatus for a status without root_key.
var ErrNoRootKey = errors.New("status has no root_key")

// RootKeyOfStatus returns the DER root key of an /api/v2/status answer body (a CBOR map whose
// root_key is the network's DER-encoded BLS public key; local replicas report theirs there). It
// returns the decoder's error for a body that is not a CBOR status map, ErrNoRootKey for one
// without root_key.
func RootKeyOfStatus(body []byte) ([]byte, error) {
	var st struct {
		RootKey []byte `cbor:"root_key"`
	}
	if err := cbor.Unmarshal(StripSelfDescribe(body), &st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	if len(st.RootKey) == 0 {
		return nil, ErrNoRootKey
	}
	return st.RootKey, nil
}
