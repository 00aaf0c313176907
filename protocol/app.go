package protocol

import cw "github.com/icws/icws/protocol/internal/candidwire"

// AppMessage is the application message of the demo canister served by the replica simulator:
// type AppMessage = record { text : text; timestamp : nat64 }.
type AppMessage struct {
	Text      string `ic:"text" json:"text"`
	Timestamp uint64 `ic:"timestamp" json:"timestamp"`
}

var candidAppMessage = cw.Record(cw.F("text", cw.Prim(cw.KindText)), cw.F("timestamp", cw.Prim(cw.KindNat64)))

// EncodeAppMessage is Candid (AppMessage,), the payload the demo canister echoes.
func EncodeAppMessage(m AppMessage) ([]byte, error) {
	return encodeCandid("app message", []*cw.Type{candidAppMessage},
		cw.RecordValue(candidAppMessage, cw.TextValue(m.Text), cw.NatValue(m.Timestamp)))
}

// DecodeAppMessage reads a Candid AppMessage payload.
func DecodeAppMessage(content []byte) (AppMessage, error) {
	v, err := decodeCandid("app message", content, candidAppMessage)
	if err != nil {
		return AppMessage{}, err
	}
	return AppMessage{Text: v.Field("text").Text(), Timestamp: v.Field("timestamp").Nat()}, nil
}
