package bus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aviate-labs/agent-go/principal"
)

const (
	testCanisterText = "bkyz2-fmaaa-aaaaa-qaaaq-cai"
	// testClientToken is a protocol.ClientKey token: client principal text, '_', nonce.
	testClientToken = "2vxsx-fae_42"
)

func TestNamesRoundTrip(t *testing.T) {
	canister := principal.MustDecode(testCanisterText)
	wantRef := ClientRef{Canister: canister, CanisterText: testCanisterText, Client: testClientToken}
	checkRef := func(t *testing.T, name string, got ClientRef, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.CanisterText != wantRef.CanisterText || got.Client != wantRef.Client || got.Canister.Encode() != testCanisterText {
			t.Fatalf("%s: parsed %+v, want %+v", name, got, wantRef)
		}
	}
	t.Run("ICWS_IN subject", func(t *testing.T) {
		for _, p := range []int{0, 7, 1023} {
			s := InSubject(p, testCanisterText, testClientToken)
			gotP, ref, err := ParseInSubject(s)
			checkRef(t, s, ref, err)
			if gotP != p {
				t.Fatalf("%s: partition %d, want %d", s, gotP, p)
			}
		}
	})
	t.Run("ICWS_OUT subject", func(t *testing.T) {
		s := OutSubject(testCanisterText, testClientToken)
		ref, err := ParseOutSubject(s)
		checkRef(t, s, ref, err)
	})
	t.Run("live subject", func(t *testing.T) {
		s := LiveSubject(testCanisterText, testClientToken)
		ref, err := ParseLiveSubject(s)
		checkRef(t, s, ref, err)
	})
	t.Run("live subject to session key", func(t *testing.T) {
		key, ok := LiveSessionKey(LiveSubject(testCanisterText, testClientToken))
		if want := SessionKey(testCanisterText, testClientToken); !ok || key != want {
			t.Fatalf("LiveSessionKey = %q, %v; want %q", key, ok, want)
		}
		if _, ok := LiveSessionKey(OutSubject(testCanisterText, testClientToken)); ok {
			t.Fatal("LiveSessionKey accepted an ICWS_OUT subject")
		}
		if live, ok := LiveSubjectOf(OutSubject(testCanisterText, testClientToken)); !ok || live != LiveSubject(testCanisterText, testClientToken) {
			t.Fatalf("LiveSubjectOf = %q, %v; want %q", live, ok, LiveSubject(testCanisterText, testClientToken))
		}
		if _, ok := LiveSubjectOf(LiveSubject(testCanisterText, testClientToken)); ok {
			t.Fatal("LiveSubjectOf accepted a live subject")
		}
		// The canister filter is the live subject with the client token as the wildcard.
		filter := LiveCanisterFilter(testCanisterText)
		if got := strings.TrimSuffix(filter, "*") + testClientToken; got != LiveSubject(testCanisterText, testClientToken) {
			t.Fatalf("LiveCanisterFilter = %q does not select %q", filter, LiveSubject(testCanisterText, testClientToken))
		}
	})
	t.Run("session key", func(t *testing.T) {
		s := SessionKey(testCanisterText, testClientToken)
		ref, err := ParseSessionKey(s)
		checkRef(t, s, ref, err)
	})
	t.Run("kick subject", func(t *testing.T) {
		got, err := ParseKickSubject(KickSubject(testCanisterText))
		if err != nil || got != testCanisterText {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("poller lease key", func(t *testing.T) {
		got, err := ParsePollerLeaseKey(PollerLeaseKey(testCanisterText))
		if err != nil || got != testCanisterText {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("submitter lease key", func(t *testing.T) {
		for _, p := range []int{0, 15, 1023} {
			got, err := ParseSubmitterLeaseKey(SubmitterLeaseKey(p))
			if err != nil || got != p {
				t.Fatalf("%d: %d, %v", p, got, err)
			}
		}
	})
	t.Run("submitter liveness key", func(t *testing.T) {
		for _, id := range []string{"host-1234", "host.example.org-77", "live"} {
			got, err := ParseSubmitterLiveKey(SubmitterLiveKey(id))
			if err != nil || got != id {
				t.Fatalf("%q: %q, %v", id, got, err)
			}
		}
	})
	t.Run("edge lease key", func(t *testing.T) {
		got, err := ParseEdgeLeaseKey(EdgeLeaseKey("edge-1_a"))
		if err != nil || got != "edge-1_a" {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("edge control subject", func(t *testing.T) {
		got, err := ParseEdgeControlSubject(EdgeControlSubject("edge-1_a"))
		if err != nil || got != "edge-1_a" {
			t.Fatalf("%q, %v", got, err)
		}
	})
	t.Run("Msg-Ids", func(t *testing.T) {
		const session = "1718000000123456789"
		for _, c := range []struct {
			id   string
			kind string
			seq  uint64
		}{
			{OpenMsgID(testCanisterText, testClientToken, session), KindOpen, 0},
			{MessageMsgID(testCanisterText, testClientToken, session, 0), KindMessage, 0},
			{MessageMsgID(testCanisterText, testClientToken, session, 18446744073709551615), KindMessage, 18446744073709551615},
			{CloseMsgID(testCanisterText, testClientToken, session), KindClose, 0},
		} {
			m, err := ParseMsgID(c.id)
			checkRef(t, c.id, m.ClientRef, err)
			if m.Kind != c.kind || m.Session != session || m.Seq != c.seq {
				t.Fatalf("%s: parsed %+v", c.id, m)
			}
		}
	})
	t.Run("lease keys do not overlap", func(t *testing.T) {
		if _, err := ParseSubmitterLeaseKey(SubmitterLiveKey("3")); err == nil {
			t.Error("a liveness key parses as a partition lease key")
		}
		if _, err := ParseSubmitterLiveKey(SubmitterLeaseKey(3)); err == nil {
			t.Error("a partition lease key parses as a liveness key")
		}
	})
}

func TestNamesRejectWhatTheirBuildersDoNotMake(t *testing.T) {
	const c, k = testCanisterText, testClientToken
	for _, tc := range []struct {
		parser string
		in     string
	}{
		{"in", ""},
		{"in", "icws.in.3." + c},
		{"in", "icws.in.3." + c + "." + k + ".x"},
		{"in", "icws.in.-1." + c + "." + k},
		{"in", "icws.in.03." + c + "." + k},
		{"in", "icws.in.+3." + c + "." + k},
		{"in", "icws.in.x." + c + "." + k},
		{"in", "icws.in.3.not-a-principal." + k},
		{"in", "icws.in.3." + strings.ToUpper(c) + "." + k},
		{"in", "icws.in.3." + c + "."},
		{"in", "icws.in.3." + c + ".*"},
		{"in", "icws.out." + c + "." + k},
		{"out", "icws.out." + c},
		{"out", "icws.out." + c + "." + k + ".x"},
		{"out", "icws.live." + c + "." + k},
		{"live", "icws.live." + c + ".>"},
		{"session", c},
		{"session", c + "."},
		{"session", "." + k},
		{"session", c + "." + k + ".x"},
		{"session", "aaaaa-aa." + k + "x" + string(rune(0))},
		{"kick", "icws.kick."},
		{"kick", "icws.kick." + c + ".x"},
		{"kick", "icws.kick.abc"},
		{"poller lease", "poller."},
		{"poller lease", "poller.abc"},
		{"poller lease", "submitter.3"},
		{"submitter lease", "submitter."},
		{"submitter lease", "submitter.3.4"},
		{"submitter lease", "submitter.99999999999999999999999"},
		{"submitter live", "submitter.live."},
		{"submitter live", "submitter.live.a..b"},
		{"submitter live", "submitter.live.a."},
		{"edge lease", "edge."},
		{"edge lease", "edge.a.b"},
		{"edge control", "icws.edge..drop"},
		{"edge control", "icws.edge.a.b.drop"},
		{"edge control", "icws.edge.a.kick"},
		{"msgid", "open." + c + "." + k},
		{"msgid", "open." + c + "." + k + ".1.2"},
		{"msgid", "msg." + c + "." + k + ".1"},
		{"msgid", "msg." + c + "." + k + ".1.-2"},
		{"msgid", "msg." + c + "." + k + ".1.01"},
		{"msgid", "msg." + c + "." + k + ".1.18446744073709551616"},
		{"msgid", "close." + c + "." + k + "."},
		{"msgid", "shut." + c + "." + k + ".1"},
	} {
		if err := parseAny(tc.parser, tc.in); !errors.Is(err, ErrBadName) {
			t.Errorf("%s parser accepted %q (err %v)", tc.parser, tc.in, err)
		}
	}
}

// parseAny runs the named parser; the fuzz target uses it too.
func parseAny(parser, s string) error {
	var err error
	switch parser {
	case "in":
		_, _, err = ParseInSubject(s)
	case "out":
		_, err = ParseOutSubject(s)
	case "live":
		_, err = ParseLiveSubject(s)
	case "session":
		_, err = ParseSessionKey(s)
	case "kick":
		_, err = ParseKickSubject(s)
	case "poller lease":
		_, err = ParsePollerLeaseKey(s)
	case "submitter lease":
		_, err = ParseSubmitterLeaseKey(s)
	case "submitter live":
		_, err = ParseSubmitterLiveKey(s)
	case "edge lease":
		_, err = ParseEdgeLeaseKey(s)
	case "edge control":
		_, err = ParseEdgeControlSubject(s)
	case "msgid":
		_, err = ParseMsgID(s)
	default:
		panic("unknown parser " + parser)
	}
	return err
}

// FuzzParseNames feeds any string to every parser: none may panic, and whatever one accepts must
// rebuild to the same string with its builder.
func FuzzParseNames(f *testing.F) {
	const c, k = testCanisterText, testClientToken
	for _, s := range []string{
		InSubject(3, c, k), OutSubject(c, k), LiveSubject(c, k), SessionKey(c, k), KickSubject(c),
		PollerLeaseKey(c), SubmitterLeaseKey(12), SubmitterLiveKey("host.a-1"), EdgeLeaseKey("e1"),
		EdgeControlSubject("e1"), OpenMsgID(c, k, "17"), MessageMsgID(c, k, "17", 9), CloseMsgID(c, k, "17"),
		"", ".", "icws.in...", "icws.in.1.aaaaa-aa." + k, "msg...." + c, "submitter.live..",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, ref, err := ParseInSubject(s); err == nil && InSubject(p, ref.CanisterText, ref.Client) != s {
			t.Errorf("ParseInSubject(%q) rebuilds to %q", s, InSubject(p, ref.CanisterText, ref.Client))
		}
		if ref, err := ParseOutSubject(s); err == nil && OutSubject(ref.CanisterText, ref.Client) != s {
			t.Errorf("ParseOutSubject(%q) does not rebuild", s)
		}
		if ref, err := ParseLiveSubject(s); err == nil && LiveSubject(ref.CanisterText, ref.Client) != s {
			t.Errorf("ParseLiveSubject(%q) does not rebuild", s)
		}
		if ref, err := ParseSessionKey(s); err == nil && SessionKey(ref.CanisterText, ref.Client) != s {
			t.Errorf("ParseSessionKey(%q) does not rebuild", s)
		}
		if ref, err := ParseSessionKey(s); err == nil && ref.Canister.Encode() != ref.CanisterText {
			t.Errorf("ParseSessionKey(%q): principal and text differ", s)
		}
		if id, err := ParseKickSubject(s); err == nil && KickSubject(id) != s {
			t.Errorf("ParseKickSubject(%q) does not rebuild", s)
		}
		if id, err := ParsePollerLeaseKey(s); err == nil && PollerLeaseKey(id) != s {
			t.Errorf("ParsePollerLeaseKey(%q) does not rebuild", s)
		}
		if n, err := ParseSubmitterLeaseKey(s); err == nil && SubmitterLeaseKey(n) != s {
			t.Errorf("ParseSubmitterLeaseKey(%q) does not rebuild", s)
		}
		if id, err := ParseSubmitterLiveKey(s); err == nil && SubmitterLiveKey(id) != s {
			t.Errorf("ParseSubmitterLiveKey(%q) does not rebuild", s)
		}
		if id, err := ParseEdgeLeaseKey(s); err == nil && EdgeLeaseKey(id) != s {
			t.Errorf("ParseEdgeLeaseKey(%q) does not rebuild", s)
		}
		if id, err := ParseEdgeControlSubject(s); err == nil && EdgeControlSubject(id) != s {
			t.Errorf("ParseEdgeControlSubject(%q) does not rebuild", s)
		}
		if m, err := ParseMsgID(s); err == nil {
			var back string
			switch m.Kind {
			case KindOpen:
				back = OpenMsgID(m.CanisterText, m.Client, m.Session)
			case KindMessage:
				back = MessageMsgID(m.CanisterText, m.Client, m.Session, m.Seq)
			case KindClose:
				back = CloseMsgID(m.CanisterText, m.Client, m.Session)
			}
			if back != s {
				t.Errorf("ParseMsgID(%q) rebuilds to %q", s, back)
			}
		}
	})
}

func TestLeaseRecordExpiry(t *testing.T) {
	written := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const ttl, skew = 10 * time.Second, time.Second
	for _, tc := range []struct {
		name    string
		expires time.Time
		written time.Time
		want    time.Time
	}{
		{"as written", written.Add(ttl), written, written.Add(ttl + skew)},
		{"a holder's clock a little ahead", written.Add(ttl + skew), written, written.Add(ttl + 2*skew)},
		{"far ahead", written.Add(100 * 365 * 24 * time.Hour), written, written.Add(ttl + 2*skew)},
		{"in the past", written.Add(-time.Hour), written, written.Add(-time.Hour + skew)},
		{"write time unknown", written.Add(time.Hour), time.Time{}, written.Add(time.Hour + skew)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := LeaseRecord{Holder: "h", ExpiresAt: tc.expires}
			if got := r.Expiry(tc.written, ttl, skew); !got.Equal(tc.want) {
				t.Fatalf("Expiry = %s, want %s", got, tc.want)
			}
			if r.Live(tc.want, tc.written, ttl, skew) || !r.Live(tc.want.Add(-time.Nanosecond), tc.written, ttl, skew) {
				t.Fatalf("Live disagrees with Expiry %s", tc.want)
			}
		})
	}
}

func FuzzDecodeLeaseRecord(f *testing.F) {
	f.Add([]byte(`{"holder":"p1","expires_at":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"holder":"p1","expires_at":"2099-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeLeaseRecord(b)
		if err != nil {
			return
		}
		written := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if e := r.Expiry(written, time.Second, time.Second); e.After(written.Add(3 * time.Second)) {
			t.Fatalf("%+v counts as held until %s, past its write + TTL + 2 skews", r, e)
		}
	})
}
