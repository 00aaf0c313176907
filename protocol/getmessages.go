package protocol

import (
	"errors"
	"fmt"

	"github.com/aviate-labs/agent-go/candid"
)

// DecodeGetMessagesResult decodes a ws_get_messages reply from any CDK version: 0.3.1 and later
// declare is_end_of_queue as bool, older ones do not have it. agent-go's Candid decoder does not
// apply subtyping: the optional shape fails on a bool and the bool shape silently reads a missing
// field as false, so the optional shape is tried first.
func DecodeGetMessagesResult(reply []byte) (CanisterOutputCertifiedMessages, error) {
	var loose CanisterWsGetMessagesResult
	if looseErr := candid.Unmarshal(reply, []any{&loose}); looseErr == nil {
		return okOrErr(loose.Ok, loose.Err)
	}
	var strict CanisterWsGetMessagesResultStrict
	if err := candid.Unmarshal(reply, []any{&strict}); err != nil {
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: decode reply: %w", err)
	}
	if strict.Ok == nil {
		return okOrErr(nil, strict.Err)
	}
	end := strict.Ok.IsEndOfQueue
	return CanisterOutputCertifiedMessages{Messages: strict.Ok.Messages, Cert: strict.Ok.Cert, Tree: strict.Ok.Tree, IsEndOfQueue: &end}, nil
}

func okOrErr(ok *CanisterOutputCertifiedMessages, errText *string) (CanisterOutputCertifiedMessages, error) {
	switch {
	case errText != nil:
		return CanisterOutputCertifiedMessages{}, fmt.Errorf("ws_get_messages: canister answered Err: %s", *errText)
	case ok == nil:
		return CanisterOutputCertifiedMessages{}, errors.New("ws_get_messages: empty variant")
	}
	return *ok, nil
}
