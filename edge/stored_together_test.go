package edge

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/bus"
	"github.com/nats-io/nats.go"
)

// A client's frames stored together in one ICWS_OUT message are delivered one by one, in order,
// each once: live, overlapping an earlier message, and after a gap.
func TestFramesStoredTogetherAreDeliveredInOrder(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	p.publishTogether(subj, 2, 3, 4)
	p.publishTogether(subj, 3, 4, 5, 6) // a second poller's answer overlapping the first's
	p.publishTogether(subj, 8, 9)       // 7 is not stored yet: a gap
	p.publish(subj, 7, 0)
	p.publishTogether(subj, 10, 11)
	expectSeqs(t, c, 2, 11)
}

// A resume replays from inside a message of several frames, and its last frame is the highest
// stored sequence number a client may claim.
func TestResumeReplaysFramesStoredTogether(t *testing.T) {
	v, p, e, c := startResumable(t)
	subj := outSubjectOfClient(c)
	p.publishTogether(subj, 2, 3)
	expectSeqs(t, c, 2, 3)
	dropSocket(t, v, c)
	p.publishTogether(subj, 4, 5, 6)
	p.publishTogether(subj, 7, 8)
	if _, code, reason := c.resume(e.url, 9); code != CloseNotResumable || !strings.Contains(reason, "highest stored sequence number 8") {
		t.Fatalf("resume from 9: close %d %q, want 4100 (above the highest stored, 8)", code, reason)
	}
	c2 := openResumable(t, v, e.url, 0)
	subj2 := outSubjectOfClient(c2)
	p.publishTogether(subj2, 2, 3, 4)
	dropSocket(t, v, c2)
	p.publishTogether(subj2, 5, 6)
	if _, code, reason := c2.resume(e.url, 3); code != 0 {
		t.Fatalf("resume from 3 refused: %d %q", code, reason)
	}
	expectSeqs(t, c2, 4, 6)
}

// A message claiming more frames than it holds is skipped, not delivered in part, and what
// follows it is delivered.
func TestMalformedStoredFramesAreSkipped(t *testing.T) {
	v := newEnv(t)
	p := v.startPipeline(false)
	e := v.startEdge(testConfig("e1"))
	c := openedClient(t, v, e.url, false)
	subj := outSubjectOfClient(c)
	bad := nats.NewMsg(subj)
	bad.Data = bus.AppendOutFrame(bus.AppendOutFrame(nil, 2, []byte("two")), 3, []byte("three"))
	bad.Header.Set(bus.HeaderSeq, "2")
	bad.Header.Set(bus.HeaderFrames, "3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := v.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	p.publishTogether(subj, 2, 3)
	for want := uint64(2); want <= 3; want++ {
		if s, data := c.next(); s != want || strings.Contains(string(data), "three") {
			t.Fatalf("got %d (%q), want %d from the well-formed message", s, data, want)
		}
	}
}

// A poller that lost its lease may store an older, shorter group after a newer one: the highest
// stored sequence number is then not in the last stored message, and a resume from it is valid.
func TestResumeFindsTheHighestStoredSequenceNumberAnywhere(t *testing.T) {
	v, p, e, c := startResumable(t)
	// Groups up to 6, then the stale poller's answer, fetched before 6 existed; all delivered.
	storeStaleGroupLast := func(c *client) {
		subj := outSubjectOfClient(c)
		p.publishTogether(subj, 2, 3)
		p.publishTogether(subj, 4, 5, 6)
		p.publishTogether(subj, 2, 3, 4, 5)
		expectSeqs(t, c, 2, 6)
		dropSocket(t, v, c)
	}
	storeStaleGroupLast(c)
	if _, code, reason := c.resume(e.url, 7); code != CloseNotResumable || !strings.Contains(reason, "highest stored sequence number 6") {
		t.Fatalf("resume from 7: close %d %q, want 4100 (above the highest stored, 6)", code, reason)
	}
	c2 := openResumable(t, v, e.url, 0)
	storeStaleGroupLast(c2)
	if _, code, reason := c2.resume(e.url, 6); code != 0 {
		t.Fatalf("valid resume from 6 refused: %d %q", code, reason)
	}
	p.publish(outSubjectOfClient(c2), 7, 0)
	if s, _ := c2.next(); s != 7 {
		t.Fatalf("after the resume: got %d, want 7", s)
	}
}
