package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icws/icws/bus"
	"github.com/icws/icws/internal/testkit"
)

// hasClose reports whether the client's close request is in ICWS_IN.
func hasClose(v *env, c *client) bool {
	for _, m := range v.inMessages(inSubjectOf(v, c)) {
		if m.kind == bus.KindClose {
			return true
		}
	}
	return false
}

// A canister failure notice ends every session of the canister opened before the failure, on
// every edge: sockets are closed with 1011 and the notice's reason, a detached session's record
// is finished (close request published, record deleted), a resume into it is refused, and
// sessions of other canisters or opened after the failure are left alone.
func TestCanisterFailureClosesItsSessionsOnEveryEdge(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	cfg := testConfig("e1")
	cfg.ResumeGrace = time.Minute // the sweeper must not be what closes the detached session
	e1 := v.startEdge(cfg)
	cfg.ID = "e2"
	e2 := v.startEdge(cfg)

	canister := randomCanister(t)
	open := func(url string, resume bool) *client {
		c := newClient(t, v.gw, canister)
		c.dial(url, resume)
		c.open()
		if seq, _ := c.next(); seq != 1 {
			t.Fatalf("first canister message has seq %d, want 1", seq)
		}
		return c
	}
	standard, resumable, detached := open(e1.url, false), open(e2.url, true), open(e1.url, true)
	other := openedClient(t, v, e2.url, true) // another canister
	dropSocket(t, v, detached)

	at := time.Now()
	reason := "icws: canister " + canister.Encode() + " stopped answering ws_get_messages: canister stopped (IC0508)"
	if err := v.nc.PublishMsg(bus.CanisterFailedMsg(canister.Encode(), at, reason)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client{"standard": standard, "resumable": resumable} {
		if code, text := expectClose(t, c.ws); code != websocket.CloseInternalServerErr || text != reason {
			t.Errorf("%s client closed with %d %q, want 1011 %q", name, code, text, reason)
		}
	}
	for name, c := range map[string]*client{"standard": standard, "resumable": resumable, "detached": detached} {
		testkit.WaitFor(t, 10*time.Second, name+" session finished", func() bool { return v.session(c) == nil && hasClose(v, c) })
	}
	if _, code, text := resumable.resume(e1.url, 1); code != CloseNotResumable || !strings.Contains(text, "stopped answering ws_get_messages") {
		t.Errorf("resume into the failed canister's session: %d %q, want 4100 naming the failure", code, text)
	}
	if rec := v.session(other); rec == nil || rec.State != bus.SessionOpen {
		t.Errorf("a session of another canister was touched: %+v", rec)
	}
	total := counter(t, e1.m.forcedCloses.WithLabelValues(causeCanisterFailed)) + counter(t, e2.m.forcedCloses.WithLabelValues(causeCanisterFailed))
	if total != 3 {
		t.Errorf("icws_edge_forced_closes_total{cause=canister_failed} = %v over both edges, want 3", total)
	}

	// A session opened after the failure (the canister runs again) is not closed by a repeat.
	later := open(e2.url, false)
	if err := v.nc.PublishMsg(bus.CanisterFailedMsg(canister.Encode(), at, reason)); err != nil {
		t.Fatal(err)
	}
	later.send()
	testkit.WaitFor(t, 5*time.Second, "the later session relays", func() bool { return len(v.inMessages(inSubjectOf(v, later))) == 2 })
	if rec := v.session(later); rec == nil || rec.State != bus.SessionOpen {
		t.Errorf("a session opened after the failure was closed: %+v", rec)
	}

	// A failure time ahead of every clock would end sessions not opened yet: the notice is
	// ignored. Notices are handled in order, so once the other canister's, sent after it, has
	// closed its session, the first has been handled.
	if err := v.nc.PublishMsg(bus.CanisterFailedMsg(canister.Encode(), time.Now().Add(time.Hour), reason)); err != nil {
		t.Fatal(err)
	}
	if err := v.nc.PublishMsg(bus.CanisterFailedMsg(other.canister.Encode(), time.Now(), reason)); err != nil {
		t.Fatal(err)
	}
	if code, _ := expectClose(t, other.ws); code != websocket.CloseInternalServerErr {
		t.Fatalf("the other canister's session closed with %d, want 1011", code)
	}
	if rec := v.session(later); rec == nil || rec.State != bus.SessionOpen {
		t.Errorf("a notice from the future closed a session: %+v", rec)
	}
}

// A submitter's session close request closes the socket with 1008 and the given reason and ends
// the session (close request published, record deleted) even when it could have been resumed.
func TestSessionCloseRequestEndsTheSession(t *testing.T) {
	v := newEnv(t)
	v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, true)
	rec := v.session(c)
	reason := "icws: client sends faster than the canister executes (120 queued, oldest expires in 30s)"
	// A request for an earlier session of the key is ignored.
	if err := v.nc.PublishMsg(bus.SessionCloseMsg("e1", rec.Key(), "1", reason)); err != nil {
		t.Fatal(err)
	}
	if err := v.nc.PublishMsg(bus.SessionCloseMsg("e1", rec.Key(), rec.Tag(), reason)); err != nil {
		t.Fatal(err)
	}
	if code, text := expectClose(t, c.ws); code != websocket.ClosePolicyViolation || text != reason {
		t.Fatalf("closed with %d %q, want 1008 %q", code, text, reason)
	}
	testkit.WaitFor(t, 10*time.Second, "session finished", func() bool { return v.session(c) == nil && hasClose(v, c) })
	if got := counter(t, e.m.forcedCloses.WithLabelValues(causeBacklog)); got != 1 {
		t.Errorf("icws_edge_forced_closes_total{cause=backlog} = %v, want 1", got)
	}
}
