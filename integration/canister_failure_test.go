package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/client"
	"github.com/icws/icws/internal/testkit"
)

// replicaCanisterStatus stops or starts a canister of the replica (test hooks on): a stopped
// canister rejects queries and calls with reject code 5, IC0508, as the IC does.
func replicaCanisterStatus(t testing.TB, replicaURL, canister, op string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, replicaURL+"/_/control/replica/"+op+"?canister="+canister, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s canister: %v", op, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("%s canister: HTTP %d", op, resp.StatusCode)
	}
}

// sumMetric adds one sample over several processes.
func sumMetric(t testing.TB, adminURLs []string, name, labels string) float64 {
	t.Helper()
	var sum float64
	for _, u := range adminURLs {
		v, err := faultMetric(u, name, labels)
		if err != nil {
			t.Fatalf("metric %s%s of %s: %v", name, labels, u, err)
		}
		sum += v
	}
	return sum
}

// A canister that stops answering ws_get_messages (stopped: IC0508 on every poll) has every
// session closed after ICWS_POLL_FAIL_CLOSE, on every edge: standard clients get 1011 with the
// reason, resuming clients cannot resume into their session, a detached session is finished
// (ws_close attempted, record removed). Once the canister runs again, a new client works.
func TestStoppedCanisterClosesItsSessions(t *testing.T) {
	const failClose = 3 * time.Second
	d := startDeployment(t, DeploymentOptions{
		Edges: 2, Submitters: 1, Pollers: 1,
		Replica: ReplicaOptions{Env: map[string]string{"ICWS_REPLICA_TEST_HOOKS": "true"}},
		PollEnv: map[string]string{"ICWS_POLL_FAIL_CLOSE": failClose.String()},
		// Long enough that the sweeper is not what closes the detached session.
		EdgeEnv: map[string]string{"ICWS_RESUME_GRACE": "2m"},
	})
	canister := d.Replica.CanisterID
	standard := dialClient(t, d.Edges[0].WSURL, d.Replica.URL, canister, dialOptions{})
	resuming := dialClient(t, d.Edges[1].WSURL, d.Replica.URL, canister, dialOptions{Resume: true})
	away := &faultDialer{addrs: []string{faultHostPort(t, d.Edges[0].WSURL)}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	detached, err := dialFaultClient(ctx, 0, away, d.Replica.URL, canister, nil, faultClientOptions{ResumeTimeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detached.conn.Close() })
	standard.sendTexts([]string{"before"})
	assertSameTexts(t, "echo before the stop", standard.receiveTexts(1, 30*time.Second), []string{"before"})
	// The third client's connection drops and it stays away: its session is detached.
	away.blocked.Store(true)
	away.dropConn()
	edges := []string{d.Edges[0].AdminURL, d.Edges[1].AdminURL}
	testkit.WaitForNil(t, 20*time.Second, 100*time.Millisecond, "the session detached", func() error {
		if v, err := faultMetric(d.Edges[0].AdminURL, "icws_edge_connections", ""); err != nil || v != 1 {
			return fmt.Errorf("edge 1 holds %v connections (%v), want 1", v, err)
		}
		return nil
	})

	stopped := time.Now()
	replicaCanisterStatus(t, d.Replica.URL, canister, "stop")
	for name, c := range map[string]*testClient{"standard": standard, "resuming": resuming} {
		err := c.waitEnded(failClose + 20*time.Second)
		took := time.Since(stopped)
		if err == nil || !strings.Contains(err.Error(), "stopped answering ws_get_messages: canister stopped (IC0508)") {
			t.Errorf("%s client ended with %v, want the canister failure", name, err)
		}
		if name == "resuming" && !errors.Is(err, client.ErrNotResumable) {
			t.Errorf("the resuming client resumed into the failed canister's session: %v", err)
		}
		t.Logf("%s client closed %s after the canister stopped: %v", name, took.Round(100*time.Millisecond), err)
	}
	if took := time.Since(stopped); took > failClose+10*time.Second {
		t.Errorf("sessions closed %s after the canister stopped, want within ICWS_POLL_FAIL_CLOSE (%s) + 10s", took, failClose)
	}
	testkit.WaitForNil(t, 20*time.Second, 200*time.Millisecond, "three sessions closed for the failure, ws_close attempted for each", func() error {
		if v := sumMetric(t, edges, "icws_edge_forced_closes_total", `{cause="canister_failed"}`); v != 3 {
			return fmt.Errorf("edges closed %v sessions for the failure, want 3", v)
		}
		if v := sumMetric(t, []string{d.Submitters[0].AdminURL}, "icws_submitter_envelopes_total", `{kind="close",outcome="rejected"}`); v < 3 {
			return fmt.Errorf("%v ws_close calls rejected by the stopped canister, want 3", v)
		}
		return nil
	})
	if v := sumMetric(t, []string{d.Pollers[0].AdminURL}, "icws_poller_canister_failures_total", `{cause="stopped"}`); v != 1 {
		t.Errorf("icws_poller_canister_failures_total{cause=stopped} = %v, want 1", v)
	}
	// The detached client comes back: its session is gone, and it is told why.
	away.blocked.Store(false)
	select {
	case <-detached.conn.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the detached client resumed into the failed canister's session")
	}
	if err := detached.conn.Err(); !errors.Is(err, client.ErrNotResumable) || !strings.Contains(err.Error(), "stopped answering ws_get_messages") {
		t.Errorf("the detached client's resume ended with %v, want not resumable naming the failure", err)
	}

	replicaCanisterStatus(t, d.Replica.URL, canister, "start")
	fresh := dialClient(t, d.Edges[1].WSURL, d.Replica.URL, canister, dialOptions{})
	fresh.sendTexts([]string{"after"})
	assertSameTexts(t, "echo after the restart", fresh.receiveTexts(1, 30*time.Second), []string{"after"})
}
