package protocol_test

import (
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/protocol"
)

// FuzzVerifyCanisterMessage feeds whole gateway → client frames through the client's check. The
// seeds are the frames recorded by ic-websocket-sdk-js; a Verifier that has checked their
// certificate keeps most executions free of BLS pairings.
func FuzzVerifyCanisterMessage(f *testing.F) {
	set := loadUpstream(f, "ic-websocket-sdk-js-v0.5.0-messages.json")
	rootKey := set.rootKey(f)
	canister := principal.MustDecode(set.Canister)
	first := set.Frames[0].message(f)
	now := certTime(f, first).Add(time.Second)
	v := &protocol.Verifier{Canister: canister, RootKey: rootKey}
	for _, fr := range set.Frames {
		m := fr.message(f)
		_, _ = v.Verify(m, now)
		raw, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := protocol.DecodeCanisterToClientMessage(frame)
		if err != nil {
			return
		}
		_, _ = v.Verify(m, now)
	})
}
