package bus

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestCanisterFailedNoticeRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	msg := CanisterFailedMsg("bkyz2-fmaaa-aaaaa-qaaaq-cai", at, "icws: canister stopped")
	if !subjectMatches(SubjectCanisterFailedAll, msg.Subject) {
		t.Fatalf("subject %q is not under %q", msg.Subject, SubjectCanisterFailedAll)
	}
	canister, gotAt, reason, err := ParseCanisterFailed(msg)
	if err != nil || canister != "bkyz2-fmaaa-aaaaa-qaaaq-cai" || !gotAt.Equal(at) || reason != "icws: canister stopped" {
		t.Fatalf("parsed %q %s %q %v", canister, gotAt, reason, err)
	}
	for _, bad := range []*nats.Msg{
		{Subject: "icws.failed.", Header: msg.Header},
		{Subject: "icws.kick.x", Header: msg.Header},
		{Subject: msg.Subject, Header: nats.Header{HeaderFailedAt: []string{"yesterday"}}},
	} {
		if _, _, _, err := ParseCanisterFailed(bad); err == nil {
			t.Errorf("notice on %q with %v accepted", bad.Subject, bad.Header)
		}
	}
}

func TestSessionCloseRequestRoundTrip(t *testing.T) {
	msg := SessionCloseMsg("edge-1", "c.k", "42", "icws: too fast")
	if msg.Subject != SessionCloseSubject("edge-1") {
		t.Fatalf("subject %q", msg.Subject)
	}
	if key, tag, reason := ParseSessionClose(msg); key != "c.k" || tag != "42" || reason != "icws: too fast" {
		t.Fatalf("parsed %q %q %q", key, tag, reason)
	}
}

func TestSessionTagOfMsgID(t *testing.T) {
	for _, tc := range []struct {
		id, tag string
		ok      bool
	}{
		{MessageMsgID("can", "cl_1", "1700000000", 7), "1700000000", true},
		{OpenMsgID("can", "cl_1", "1700000000"), "1700000000", true},
		{CloseMsgID("can", "cl_1", "1700000000"), "1700000000", true},
		{"msg.can.cl_1.7", "", false},
		{"open.can.cl_1.", "", false},
		{"", "", false},
		{"kick.a.b.c", "", false},
	} {
		if tag, ok := SessionTagOfMsgID(tc.id); tag != tc.tag || ok != tc.ok {
			t.Errorf("SessionTagOfMsgID(%q) = %q, %v; want %q, %v", tc.id, tag, ok, tc.tag, tc.ok)
		}
	}
}

// subjectMatches is NATS wildcard matching for the tests ("*" one token, ">" the rest).
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

func FuzzParseCanisterFailed(f *testing.F) {
	f.Add("icws.failed.bkyz2-fmaaa-aaaaa-qaaaq-cai", "2026-05-01T12:00:00.123456789Z", "icws: canister stopped")
	f.Add("icws.failed.", "", "")
	f.Add("icws.failed.a.b", "2026-05-01T12:00:00Z", "\xff")
	f.Fuzz(func(t *testing.T, subject, at, reason string) {
		msg := &nats.Msg{Subject: subject, Header: nats.Header{HeaderFailedAt: []string{at}, HeaderCloseReason: []string{reason}}}
		canister, _, got, err := ParseCanisterFailed(msg)
		if err == nil && (canister == "" || strings.ContainsAny(canister, ".*>") || got != reason) {
			t.Fatalf("accepted %q → canister %q reason %q", subject, canister, got)
		}
	})
}

func FuzzSessionTagOfMsgID(f *testing.F) {
	f.Add("msg.bkyz2-fmaaa-aaaaa-qaaaq-cai.abc_1.1700000000.7")
	f.Add("close.c.k.1")
	f.Add("....")
	f.Fuzz(func(t *testing.T, id string) {
		if tag, ok := SessionTagOfMsgID(id); ok && (tag == "" || strings.Contains(tag, ".")) {
			t.Fatalf("%q: tag %q", id, tag)
		}
	})
}
