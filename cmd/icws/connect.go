package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	agentid "github.com/aviate-labs/agent-go/identity"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/client"
	"github.com/icws/icws/internal/config"
	"github.com/icws/icws/internal/redact"
	"github.com/icws/icws/protocol"
)

// connectConfig is read from ICWS_* variables; flags override it.
type connectConfig struct {
	config.Log
	Gateway       string        `envconfig:"CONNECT_GATEWAY" default:"ws://127.0.0.1:8080" desc:"icws connect: WebSocket URL of the gateway"`
	ICURL         string        `envconfig:"CONNECT_IC_URL" default:"http://127.0.0.1:4943" desc:"icws connect: IC HTTP endpoint for the root key (fetched from /api/v2/status unless mainnet)"`
	Canister      string        `envconfig:"CONNECT_CANISTER" default:"bkyz2-fmaaa-aaaaa-qaaaq-cai" desc:"icws connect: canister id"`
	IdentityFile  string        `envconfig:"CONNECT_IDENTITY_FILE" default:"" desc:"icws connect: client identity PEM (Ed25519 PKCS#8, secp256k1 or P-256 EC key); empty means a fresh random Ed25519 identity"`
	AckInterval   time.Duration `envconfig:"CONNECT_ACK_INTERVAL" default:"300s" desc:"icws connect: the canister's send_ack_interval (the client's ack watchdog is this + 30s)"`
	Resume        bool          `envconfig:"CONNECT_RESUME" default:"true" desc:"icws connect: use the icws resume extension (reconnect and resume on drops)"`
	ResumeTimeout time.Duration `envconfig:"CONNECT_RESUME_TIMEOUT" default:"60s" desc:"icws connect: give up resuming a dropped session after this long"`
	MaxCertAge    time.Duration `envconfig:"CONNECT_MAX_CERT_AGE" default:"5m" desc:"icws connect: oldest certificate accepted on a canister message"`
	Linger        time.Duration `envconfig:"CONNECT_LINGER" default:"0s" desc:"icws connect: after EOF on stdin, keep printing incoming messages this long before closing"`
	// Liveness of the connection to the gateway (resume only).
	HeartbeatSilence time.Duration `envconfig:"CONNECT_HEARTBEAT_SILENCE" default:"0s" desc:"icws connect: with resume, ask the gateway for heartbeats and resume elsewhere after this long without any frame; 0 = twice the interval the gateway announces, negative = no heartbeats"`
	PingInterval     time.Duration `envconfig:"CONNECT_PING_INTERVAL" default:"15s" desc:"icws connect: with resume, ping the gateway this often and resume after twice this without an answer; negative = no pings"`
	ConnectTimeout   time.Duration `envconfig:"CONNECT_TIMEOUT" default:"5s" desc:"icws connect: bound on one connection attempt (dial, upgrade, handshake, resume answer)"`
	ReconnectMax     time.Duration `envconfig:"CONNECT_RECONNECT_MAX" default:"2s" desc:"icws connect: longest wait between two resume attempts (the backoff starts at 100ms)"`
}

func connectCommand() command {
	c := configured("connect", "command-line client: stdin lines → canister, canister messages → JSON lines on stdout; each flag overrides its ICWS_CONNECT_* variable",
		func(ctx context.Context, a *app, cfg *connectConfig, logger *slog.Logger, args []string) error {
			return runConnect(ctx, a.stdout, os.Stdin, cfg, logger, args)
		})
	c.usage = "[-gateway URL] [-ic URL] [-canister ID] [-identity FILE] [-ack-interval D] [-resume=BOOL] [-linger D]"
	return c
}

func runConnect(ctx context.Context, stdout io.Writer, stdin io.Reader, cfg *connectConfig, logger *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.StringVar(&cfg.Gateway, "gateway", cfg.Gateway, "gateway WebSocket URL (ICWS_CONNECT_GATEWAY)")
	fs.StringVar(&cfg.ICURL, "ic", cfg.ICURL, "IC HTTP endpoint for the root key (ICWS_CONNECT_IC_URL)")
	fs.StringVar(&cfg.Canister, "canister", cfg.Canister, "canister id (ICWS_CONNECT_CANISTER)")
	fs.StringVar(&cfg.IdentityFile, "identity", cfg.IdentityFile, "identity PEM file; empty = random Ed25519 (ICWS_CONNECT_IDENTITY_FILE)")
	fs.DurationVar(&cfg.AckInterval, "ack-interval", cfg.AckInterval, "the canister's ack interval (ICWS_CONNECT_ACK_INTERVAL)")
	fs.BoolVar(&cfg.Resume, "resume", cfg.Resume, "resume dropped sessions; -resume=false to disable (ICWS_CONNECT_RESUME)")
	fs.DurationVar(&cfg.Linger, "linger", cfg.Linger, "after EOF on stdin, keep printing incoming messages this long (ICWS_CONNECT_LINGER)")
	if err := fs.Parse(args); err != nil {
		return &config.Error{Err: err}
	}
	canister, err := principal.Decode(cfg.Canister)
	if err != nil {
		return &config.Error{Err: fmt.Errorf("canister %q is not a principal", cfg.Canister)}
	}
	id, err := loadClientIdentity(cfg.IdentityFile)
	if err != nil {
		return &config.Error{Err: err}
	}
	logger.Info("connecting", "gateway", redact.URL(cfg.Gateway), "canister", canister.Encode(), "principal", id.Sender().Encode(), "resume", cfg.Resume)
	conn, err := client.Dial(ctx, client.Config{
		GatewayURL:    cfg.Gateway,
		ICURL:         cfg.ICURL,
		Canister:      canister,
		Identity:      id,
		AckInterval:   cfg.AckInterval,
		MaxCertAge:    cfg.MaxCertAge,
		Resume:        cfg.Resume,
		ResumeTimeout: cfg.ResumeTimeout,
		Logger:        logger,

		HeartbeatSilence: cfg.HeartbeatSilence,
		PingInterval:     cfg.PingInterval,
		ConnectTimeout:   cfg.ConnectTimeout,
		ReconnectMax:     cfg.ReconnectMax,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	logger.Info("connected", "client_key", conn.ClientKey().String())

	printed := make(chan struct{})
	go func() {
		defer close(printed)
		printMessages(stdout, conn.Messages(), logger)
	}()

	eof := make(chan error, 1)
	go func() { eof <- sendLines(ctx, conn, stdin) }()

	select {
	case <-ctx.Done():
		conn.Close()
		<-printed
		return nil
	case <-conn.Done():
		<-printed
		if err := conn.Err(); err != nil {
			return err
		}
		return nil
	case err := <-eof:
		if err != nil && !errors.Is(err, client.ErrClosed) {
			conn.Close()
			<-printed
			return err
		}
		if cfg.Linger > 0 {
			t := time.NewTimer(cfg.Linger)
			select {
			case <-t.C:
			case <-conn.Done():
			case <-ctx.Done():
			}
			t.Stop()
		}
		conn.Close()
		<-printed
		if err := conn.Err(); err != nil {
			return err
		}
		return nil
	}
}

// sendLines sends each stdin line as AppMessage{text, timestamp}; it returns nil on EOF.
func sendLines(ctx context.Context, conn *client.Conn, stdin io.Reader) error {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b, err := client.EncodeAppMessage(protocol.AppMessage{Text: sc.Text(), Timestamp: uint64(time.Now().UnixNano())})
		if err != nil {
			return err
		}
		if err := conn.Send(ctx, b); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	return nil
}

type connectLine struct {
	Seq       uint64 `json:"seq"`
	Text      string `json:"text"`
	Timestamp uint64 `json:"timestamp"`
}

type connectRawLine struct {
	Seq       uint64 `json:"seq"`
	CandidHex string `json:"candid_hex"`
}

// printMessages writes one JSON line per message; payloads that are not an AppMessage are shown
// as hex.
func printMessages(w io.Writer, msgs <-chan client.Message, logger *slog.Logger) {
	enc := json.NewEncoder(w)
	for m := range msgs {
		var v any
		if app, err := client.DecodeAppMessage(m.Content); err == nil {
			v = connectLine{Seq: m.Seq, Text: app.Text, Timestamp: app.Timestamp}
		} else {
			v = connectRawLine{Seq: m.Seq, CandidHex: hex.EncodeToString(m.Content)}
		}
		if err := enc.Encode(v); err != nil {
			logger.Error("write stdout", "err", err)
		}
	}
}

// loadClientIdentity reads a PEM identity of any type agent-go signs with, or makes a random
// Ed25519 one.
func loadClientIdentity(path string) (agentid.Identity, error) {
	if path == "" {
		return agentid.NewRandomEd25519Identity()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if id, err := agentid.NewEd25519IdentityFromPEM(data); err == nil {
		return id, nil
	}
	if id, err := agentid.NewSecp256k1IdentityFromPEM(data); err == nil {
		return id, nil
	}
	if id, err := agentid.NewSecp256k1IdentityFromPEMWithoutParameters(data); err == nil {
		return id, nil
	}
	if id, err := agentid.NewPrime256v1IdentityFromPEM(data); err == nil {
		return id, nil
	}
	return nil, fmt.Errorf("identity %s: not an Ed25519, secp256k1 or P-256 private key PEM", path)
}
