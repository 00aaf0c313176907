package protocol

// AppMessage is the application message of the demo canister served by the replica simulator:
// type AppMessage = record { text : text; timestamp : nat64 }.
type AppMessage struct {
	Text      string `ic:"text" json:"text"`
	Timestamp uint64 `ic:"timestamp" json:"timestamp"`
}
