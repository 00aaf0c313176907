package protocol

import (
	"errors"
	"strings"
	"testing"

	"github.com/aviate-labs/agent-go/candid"
	"github.com/aviate-labs/agent-go/principal"
)

func TestDecodeGetMessagesResult(t *testing.T) {
	msgs := []CanisterOutputMessage{{
		ClientKey: ClientKey{ClientPrincipal: principal.AnonymousID, ClientNonce: 7},
		Key:       "k_00000000000000000001",
		Content:   []byte{1, 2, 3},
	}}
	errText := "boom"
	tests := []struct {
		name    string
		value   any
		wantEnd bool
		wantErr string
	}{
		{"cdk 0.4 not end", CanisterWsGetMessagesResultStrict{Ok: &CanisterOutputCertifiedMessagesStrict{Messages: msgs, Cert: []byte{9}, Tree: []byte{8}, IsEndOfQueue: false}}, false, ""},
		{"cdk 0.4 end", CanisterWsGetMessagesResultStrict{Ok: &CanisterOutputCertifiedMessagesStrict{Messages: msgs, Cert: []byte{9}, Tree: []byte{8}, IsEndOfQueue: true}}, true, ""},
		{"canister Err", CanisterWsGetMessagesResultStrict{Err: &errText}, false, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := candid.Marshal([]any{tt.value})
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeGetMessagesResult(b)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrGetMessagesRefused) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.EndOfQueue() != tt.wantEnd || len(got.Messages) != 1 || got.Messages[0].Key != msgs[0].Key {
				t.Fatalf("got %+v", got)
			}
		})
	}
	if _, err := DecodeGetMessagesResult([]byte("garbage")); err == nil {
		t.Fatal("garbage decoded")
	}
}
