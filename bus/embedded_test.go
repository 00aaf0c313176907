package bus

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func testServerConfig(dir string) ServerConfig {
	return ServerConfig{
		DataDir:      dir,
		MaxMemory:    64 << 20,
		MaxStore:     1 << 30,
		ServerName:   "icws-test",
		ReadyTimeout: 30 * time.Second,
	}
}

// testLogger stands in for testkit.Logger(t, slog.LevelWarn), which bus's own tests cannot
// import (testkit imports bus).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startEmbedded starts a server on dir and returns it with a JetStream context; the server stops
// at the end of the test unless the test stops it first.
func startEmbedded(t *testing.T, cfg ServerConfig) (*Embedded, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	nc, err := e.Connect(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return e, nc, js
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStoreDirIsCreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	e, _, _ := startEmbedded(t, testServerConfig(dir))
	st, err := os.Stat(filepath.Join(dir, "nats"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode %v, want 0700", st.Mode().Perm())
	}
	if e.ClientURL() != "" {
		t.Fatalf("in-process server has client URL %q", e.ClientURL())
	}
	if got := e.Server().StoreDir(); !strings.HasPrefix(got, filepath.Join(dir, "nats")) {
		t.Fatalf("server store dir %q not under %q", got, dir)
	}
}

func TestEnsureTwiceIsNoop(t *testing.T) {
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	topo := DefaultTopology()
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	before := snapshot(ctx, t, js)
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	after := snapshot(ctx, t, js)
	for name, b := range before {
		a := after[name]
		if !reflect.DeepEqual(a.Config, b.Config) {
			t.Errorf("%s config changed by a second Ensure:\n before %+v\n after  %+v", name, b.Config, a.Config)
		}
		if !a.Created.Equal(b.Created) {
			t.Errorf("%s re-created by a second Ensure", name)
		}
	}
}

func snapshot(ctx context.Context, t *testing.T, js jetstream.JetStream) map[string]*jetstream.StreamInfo {
	t.Helper()
	out := map[string]*jetstream.StreamInfo{}
	for _, name := range []string{StreamIn, StreamOut, "KV_" + BucketSessions, "KV_" + BucketCursors, "KV_" + BucketLeases} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info
	}
	return out
}

func TestEnsureUpdatesChangedTopology(t *testing.T) {
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	topo := DefaultTopology()
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	topo.Partitions = 4
	topo.OutMaxAge = 20 * time.Minute
	topo.OutMaxMsgsPerSubject = 50
	if err := Ensure(ctx, js, topo); !errors.Is(err, ErrPartitionsMismatch) || !strings.Contains(err.Error(), "ICWS_PARTITIONS=4") {
		t.Fatalf("Ensure with other partitions: err = %v, want ErrPartitionsMismatch naming ICWS_PARTITIONS", err)
	}
	topo.Repartition = true
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatalf("Ensure with a changed topology: %v", err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if h.Partitions != 4 {
		t.Errorf("Open read %d partitions, want 4", h.Partitions)
	}
	info, err := h.Out.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 20*time.Minute || info.Config.MaxMsgsPerSubject != 50 {
		t.Errorf("ICWS_OUT not updated: MaxAge %s, MaxMsgsPerSubject %d", info.Config.MaxAge, info.Config.MaxMsgsPerSubject)
	}
}

func TestEnsureReportsImpossibleChanges(t *testing.T) {
	t.Run("storage type", func(t *testing.T) {
		ctx := ctxT(t)
		_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: StreamOut, Subjects: []string{SubjectOutAll}, Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
		err := Ensure(ctx, js, DefaultTopology())
		if err == nil || !strings.Contains(err.Error(), StreamOut) {
			t.Fatalf("want an error naming %s, got %v", StreamOut, err)
		}
		t.Log(err)
	})
	t.Run("foreign stream owns the subjects", func(t *testing.T) {
		ctx := ctxT(t)
		_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SOMEONE_ELSE", Subjects: []string{"icws.>"}}); err != nil {
			t.Fatal(err)
		}
		err := Ensure(ctx, js, DefaultTopology())
		if err == nil || !strings.Contains(err.Error(), StreamIn) {
			t.Fatalf("want an error naming %s, got %v", StreamIn, err)
		}
		t.Log(err)
	})
	t.Run("replicas on a single server", func(t *testing.T) {
		ctx := ctxT(t)
		_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
		topo := DefaultTopology()
		topo.Replicas = 3
		err := Ensure(ctx, js, topo)
		if err == nil || !strings.Contains(err.Error(), StreamIn) {
			t.Fatalf("want an error naming %s, got %v", StreamIn, err)
		}
		t.Log(err)
	})
}

func TestOpen(t *testing.T) {
	ctx := ctxT(t)
	_, _, js := startEmbedded(t, testServerConfig(t.TempDir()))
	if _, err := Open(ctx, js); !errors.Is(err, ErrNotEnsured) {
		t.Fatalf("Open before Ensure: want ErrNotEnsured, got %v", err)
	}
	topo := DefaultTopology()
	topo.Partitions = 7
	if err := Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if h.Partitions != 7 || h.In == nil || h.Out == nil || h.Sessions == nil || h.Cursors == nil || h.Leases == nil {
		t.Fatalf("Open = %+v", h)
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testServerConfig(dir)
	ctx := ctxT(t)

	e, _, js := startEmbedded(t, cfg)
	if err := Ensure(ctx, js, DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	h, err := Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	subj := OutSubject("bkyz2-fmaaa-aaaaa-qaaaq-cai", "client1")
	msg := &nats.Msg{Subject: subj, Data: []byte("certified message"), Header: nats.Header{}}
	msg.Header.Set(HeaderSeq, "1")
	msg.Header.Set(HeaderMsgID, "dedup-1")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Cursors.Put(ctx, "bkyz2-fmaaa-aaaaa-qaaaq-cai", []byte(`{"next_nonce":5}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	_, _, js = startEmbedded(t, cfg)
	h, err = Open(ctx, js)
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	got, err := h.Out.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatalf("message lost across restart: %v", err)
	}
	if string(got.Data) != "certified message" || got.Header.Get(HeaderSeq) != "1" {
		t.Fatalf("message changed across restart: %q %v", got.Data, got.Header)
	}
	kv, err := h.Cursors.Get(ctx, "bkyz2-fmaaa-aaaaa-qaaaq-cai")
	if err != nil {
		t.Fatalf("KV value lost across restart: %v", err)
	}
	if string(kv.Value()) != `{"next_nonce":5}` {
		t.Fatalf("KV value changed: %s", kv.Value())
	}
	// The duplicate window survives too: the same message id is not stored twice.
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Errorf("re-published message with the same id after restart was not a duplicate")
	}
}

func TestTCPListenerAndExternalConnect(t *testing.T) {
	ctx := ctxT(t)
	cfg := testServerConfig(t.TempDir())
	cfg.NATSListen = "127.0.0.1:0"
	e, _, _ := startEmbedded(t, cfg)
	url := e.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q", url)
	}
	// Two URLs, the first unreachable: the client must still find the second.
	ccfg := DefaultClientConfig()
	ccfg.URL = "nats://127.0.0.1:1," + url
	nc, err := Connect(ctx, ccfg, "ext", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConnectGivesUpWhenContextEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	ccfg := DefaultClientConfig()
	ccfg.URL = "nats://" + addr
	_, err = Connect(ctx, ccfg, "nowhere", testLogger(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
}

func TestStartEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testServerConfig(t.TempDir())
	cfg.NATSListen = ln.Addr().String()
	start := time.Now()
	e, err := StartEmbedded(ctxT(t), cfg, testLogger(t))
	if err == nil {
		_ = e.Shutdown(ctxT(t))
		t.Fatal("started on a port in use")
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s to report a port in use", time.Since(start))
	}
	t.Log(err)
}

func TestServerConfigValidate(t *testing.T) {
	good := testServerConfig("d")
	for _, tc := range []struct {
		name string
		mod  func(*ServerConfig)
		want string
	}{
		{"ok", func(*ServerConfig) {}, ""},
		{"listen", func(c *ServerConfig) { c.NATSListen = "nonsense" }, "ICWS_NATS_LISTEN"},
		{"memory", func(c *ServerConfig) { c.MaxMemory = 10 }, "ICWS_NATS_MAX_MEMORY"},
		{"store", func(c *ServerConfig) { c.MaxStore = 0 }, "ICWS_NATS_MAX_STORE"},
		{"datadir", func(c *ServerConfig) { c.DataDir = "" }, "ICWS_DATA_DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTopologyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Topology)
		want string
	}{
		{"default", func(*Topology) {}, ""},
		{"partitions zero", func(t *Topology) { t.Partitions = 0 }, "ICWS_PARTITIONS"},
		{"partitions too many", func(t *Topology) { t.Partitions = 1025 }, "ICWS_PARTITIONS"},
		{"replicas 2", func(t *Topology) { t.Replicas = 2 }, "ICWS_STREAM_REPLICAS"},
		{"replicas 3", func(t *Topology) { t.Replicas = 3 }, ""},
		{"in max age short", func(t *Topology) { t.InMaxAge = time.Minute }, "ICWS_IN_MAX_AGE"},
		{"out max age zero", func(t *Topology) { t.OutMaxAge = 0 }, "ICWS_REPLAY_MAX_AGE"},
		{"replay messages zero", func(t *Topology) { t.OutMaxMsgsPerSubject = 0 }, "ICWS_REPLAY_MAX_MESSAGES"},
		{"dup window zero", func(t *Topology) { t.DuplicateWindow = 0 }, "ICWS_DUPLICATE_WINDOW"},
		{"dup window too long", func(t *Topology) { t.DuplicateWindow = 11 * time.Minute }, "ICWS_DUPLICATE_WINDOW"},
		{"message bytes small", func(t *Topology) { t.MaxMessageBytes = 1024 }, "ICWS_STREAM_MAX_MESSAGE_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo := DefaultTopology()
			tc.mod(&topo)
			err := topo.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestConnCheck(t *testing.T) {
	ctx := ctxT(t)
	e, nc, _ := startEmbedded(t, testServerConfig(t.TempDir()))
	check := ConnCheck(nc)
	if err := check(ctx); err != nil {
		t.Fatalf("check on a live connection: %v", err)
	}
	if err := check(context.Background()); err != nil {
		t.Fatalf("check without a deadline: %v", err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for check(ctx) == nil {
		if time.Now().After(deadline) {
			t.Fatal("check still passes after the server stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
