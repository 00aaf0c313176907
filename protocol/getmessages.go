package protocol

import (
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/candid"
)

// ErrGetMessagesRefused wraps the Err text of a ws_get_messages answer.
var ErrGetMessagesRefused = errors.New("canister answered Err")

// DecodeGetMessagesResult decodes a ws_get_messages reply. CDK 0.3.1 and later (the versions a
// gateway supports, PROTOCOL.md §0) declare is_end_of_queue as bool; agent-go's Candid decoder
// applies no subtyping, so that shape is decoded first and the optional shape is the fallback.
func DecodeGetMessagesResult(reply []byte) (CanisterOutputCertifiedMessages, error) {
	var strict CanisterWsGetMessagesResultStrict
	strictErr := candid.Unmarshal(reply, []any{&strict})
	if strictErr == nil {
		if strict.Ok == nil {
			return okOrErr(nil, strict.Err)
		}
		end := strict.Ok.IsEndOfQueue
		return CanisterOutputCertifiedMessages{Messages: strict.Ok.Messages, Cert: strict.Ok.Cert, Tree: strict.Ok.Tree, IsEndOfQueue: &end}, nil
	}
	var loose CanisterWsGetMessagesResult
	if err := candid.Unmarshal(reply, []any{&loose}); err != nil {
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: decode reply: %w", errors.Join(strictErr, err))
	}
	return okOrErr(loose.Ok, loose.Err)
}

func okOrErr(ok *CanisterOutputCertifiedMessages, errText *string) (CanisterOutputCertifiedMessages, error) {
	switch {
	case errText != nil:
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: %w: %s", ErrGetMessagesRefused, *errText)
	case ok == nil:
		return CanisterOutputCertifiedMessages{}, errors.New("ws_get_messages: answer is neither Ok nor Err")
	}
	return *ok, nil
}
