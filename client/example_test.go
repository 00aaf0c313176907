package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/client"
	"github.com/icws/icws/protocol"
)

// Connect to a gateway, send one message to the demo canister and print what comes back.
func Example() {
	id, err := identity.NewRandomEd25519Identity()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{
		GatewayURL: "ws://127.0.0.1:8080",
		ICURL:      "http://127.0.0.1:4943", // root key from /api/v2/status
		Canister:   principal.MustDecode("bkyz2-fmaaa-aaaaa-qaaaq-cai"),
		Identity:   id,
		Resume:     true, // icws resume extension: survive dropped connections
	})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	payload, _ := client.EncodeAppMessage(protocol.AppMessage{Text: "hello", Timestamp: uint64(time.Now().UnixNano())})
	if err := conn.Send(ctx, payload); err != nil {
		log.Fatal(err)
	}
	for m := range conn.Messages() { // verified, in order; closed when the connection ends
		app, _ := client.DecodeAppMessage(m.Content)
		fmt.Println(m.Seq, app.Text)
		break
	}
	if err := conn.Err(); err != nil {
		log.Fatal(err)
	}
}
