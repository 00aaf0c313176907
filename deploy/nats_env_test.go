package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
)

// natsPasswords are the variables deploy/nats/*.conf read from the NATS server's environment, as
// docker-compose.yml sets them; setNATSEnv sets fresh ones for the test.
type natsPasswords struct {
	Edge, Submitter, Poller, Route string
}

func setNATSEnv(t *testing.T) natsPasswords {
	random := func() string {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(b)
	}
	p := natsPasswords{Edge: random(), Submitter: random(), Poller: random(), Route: random()}
	t.Setenv("NATS_EDGE_PASSWORD", p.Edge)
	t.Setenv("NATS_SUBMITTER_PASSWORD", p.Submitter)
	t.Setenv("NATS_POLLER_PASSWORD", p.Poller)
	t.Setenv("NATS_ROUTE_PASSWORD", p.Route)
	for i := 1; i <= 3; i++ {
		t.Setenv(fmt.Sprintf("NATS_ROUTE_%d", i), fmt.Sprintf("nats-route://icws-route:%s@nats%d:6222", p.Route, i))
	}
	return p
}

// of is the password of a role's user.
func (p natsPasswords) of(role string) string {
	switch role {
	case "edge":
		return p.Edge
	case "submitter":
		return p.Submitter
	case "poller":
		return p.Poller
	}
	panic("unknown role " + role)
}
