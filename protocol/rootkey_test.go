package protocol

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestRootKeyOfStatus(t *testing.T) {
	body, err := cbor.Marshal(map[string]any{"root_key": []byte{1, 2, 3}, "impl_version": "x"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := RootKeyOfStatus(append(append([]byte{}, SelfDescribeTag...), body...))
	if err != nil || !bytes.Equal(k, []byte{1, 2, 3}) {
		t.Fatalf("root key %x, %v", k, err)
	}
	body, _ = cbor.Marshal(map[string]any{"impl_version": "x"})
	if _, err := RootKeyOfStatus(body); !errors.Is(err, ErrNoRootKey) {
		t.Fatalf("no root_key: %v, want ErrNoRootKey", err)
	}
	if _, err := RootKeyOfStatus([]byte("not cbor")); err == nil || errors.Is(err, ErrNoRootKey) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestIsMainnetHost(t *testing.T) {
	for host, want := range map[string]bool{"icp-api.io": true, "icp0.io": true, "ic0.app": true, "127.0.0.1": false, "icp0.io:443": false, "x.icp0.io": false} {
		if IsMainnetHost(host) != want {
			t.Errorf("IsMainnetHost(%q) = %v", host, !want)
		}
	}
}
