package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

// A cursor no poller writes does not stop its canister from being polled: the poller starts over
// from the canister's first retained message, as after a queue reset, and replaces the cursor.
func TestCorruptCursorIsReplaced(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"not JSON", `{"next_nonce":`},
		{"a field of the wrong type", `{"next_nonce":"x"}`},
		{"a nonce without the last message's key", `{"next_nonce":1000,"epoch":3}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t)
			c := newFakeCanister(testGateway)
			c.push(5, testClient(1))
			ctx := context.Background()
			if _, err := e.h.Cursors.Put(ctx, testCanister.Encode(), []byte(tc.value)); err != nil {
				t.Fatal(err)
			}
			e.startPoller("p1", fastConfig(testCanister.Encode()), newIC(c), false)
			testkit.WaitFor(t, 10*time.Second, "the canister's 5 messages published", func() bool { return e.outCount() == 5 })
			testkit.WaitForNil(t, 10*time.Second, 50*time.Millisecond, "the cursor replaced", func() error {
				ent, err := e.h.Cursors.Get(ctx, testCanister.Encode())
				if err != nil {
					return err
				}
				var cur bus.CursorRecord
				if err := json.Unmarshal(ent.Value(), &cur); err != nil || cur.NextNonce != 5 || cur.LastKey == "" {
					return fmt.Errorf("cursor %s", ent.Value())
				}
				return nil
			})
		})
	}
}

// Whatever a cursor's bytes, decoding them gives a cursor a poller could have written or
// errCorruptCursor, and never panics.
func FuzzDecodeCursor(f *testing.F) {
	f.Add([]byte(`{"next_nonce":5,"epoch":1,"last_key":"k_4","last_content_hash":"ab"}`))
	f.Add([]byte(`{"next_nonce":1000,"epoch":3}`))
	f.Add([]byte(`{"next_nonce":"x"}`))
	f.Fuzz(func(t *testing.T, val []byte) {
		cur, err := decodeCursor(val)
		if err != nil {
			if !errors.Is(err, errCorruptCursor) {
				t.Fatalf("error %v is not errCorruptCursor", err)
			}
			return
		}
		if cur.NextNonce > 0 && cur.LastKey == "" {
			t.Fatalf("accepted %+v", cur)
		}
	})
}
