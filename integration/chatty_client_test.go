package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/replica/wscanister"
)

// With the replica's update latency at 1 s a client can relay about one message per second. A
// client that sends 300 at once would see its last ones expire (3-4 min ingress expiry) and then
// be closed by the canister for a sequence gap; the gateway closes it at once instead, with a
// reason naming the backlog, and its ws_close reaches the canister. A client within the rate is
// untouched.
func TestClientSendingFasterThanTheCanisterIsClosed(t *testing.T) {
	dev := startDev(t, ReplicaOptions{UpdateLatency: time.Second})
	chatty := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})
	quiet := dialClient(t, dev.GatewayURL, dev.URL, dev.CanisterID, dialOptions{})

	quiet.sendTexts(numbered("quiet-", 3))
	start := time.Now()
	// The gateway may close the client before all 300 are sent: sending stops at the close.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, text := range numbered("chatty-", 300) {
		if err := chatty.Send(ctx, appMessage(t, text)); err != nil {
			t.Logf("sending stopped at %q: %v", text, err)
			break
		}
	}
	err := chatty.waitEnded(60 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "1008") || !strings.Contains(err.Error(), "client sends faster than the canister executes") {
		t.Fatalf("the chatty client ended with %v, want 1008 naming the backlog", err)
	}
	t.Logf("chatty client closed %s after it started sending: %v", time.Since(start).Round(100*time.Millisecond), err)
	assertSameTexts(t, "quiet client's echoes", quiet.receiveTexts(3, 30*time.Second), numbered("quiet-", 3))

	log := waitCanisterLog(t, dev.Control, chatty.Key, 60*time.Second, "the chatty client's ws_close at the canister", func(l wscanister.ClientLog) error {
		if !slices.Contains(l.Closes, "ws_close") {
			return fmt.Errorf("closes %v", l.Closes)
		}
		return nil
	})
	if log.SequenceErrors != 0 || slices.Contains(log.Closes, "WrongSequenceNumber") {
		t.Errorf("the canister saw a sequence gap: %+v", log)
	}
	if log.Received >= 300 {
		t.Errorf("the canister received %d of the chatty client's messages: nothing was dropped", log.Received)
	}
	qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer qcancel()
	if l, err := dev.Control.Received(qctx, quiet.Key); err != nil || l.Received != 3 || l.SequenceErrors != 0 {
		t.Errorf("the quiet client at the canister: %+v, %v", l, err)
	}
	for _, m := range []struct {
		name, labels string
		ok           func(float64) bool
	}{
		{"icws_submitter_backlog_closes_total", "", func(v float64) bool { return v == 1 }},
		{"icws_edge_forced_closes_total", `{cause="backlog"}`, func(v float64) bool { return v == 1 }},
		{"icws_submitter_envelopes_total", `{kind="message",outcome="backlog_dropped"}`, func(v float64) bool { return v > 0 && v+float64(log.Received) <= 300 }},
	} {
		v, err := faultMetric(dev.AdminURL, m.name, m.labels)
		if err != nil || !m.ok(v) {
			t.Errorf("%s%s = %v (%v)", m.name, m.labels, v, err)
		}
	}
}
