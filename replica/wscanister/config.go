package wscanister

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/icws/icws/internal/config"
)

// Config holds the knobs of the demo canister. The first three are the CDK's WsInitParams
// (send_ack_interval_ms, the keep-alive timeout, max_number_of_returned_messages); the rest bound
// the demo app and its test log.
type Config struct {
	AckInterval         time.Duration `envconfig:"REPLICA_ACK_INTERVAL" default:"300s" desc:"send_ack_interval_ms of the demo canister"`
	KeepAliveTimeout    time.Duration `envconfig:"REPLICA_KEEPALIVE_TIMEOUT" default:"60s" desc:"CLIENT_KEEP_ALIVE_TIMEOUT_MS of the demo canister"`
	MaxReturnedMessages int           `envconfig:"REPLICA_MAX_RETURNED_MESSAGES" default:"50" desc:"max messages per ws_get_messages"`
	DeleteBatch         int           `envconfig:"REPLICA_DELETE_BATCH" default:"5" desc:"max expired messages the canister deletes per send (CDK MESSAGES_TO_DELETE_COUNT)"`
	MaxBurst            int           `envconfig:"REPLICA_MAX_BURST" default:"10000" desc:"largest N honoured by the demo app's burst:N message (larger N is capped)"`
	MaxLoggedTexts      int           `envconfig:"REPLICA_MAX_LOGGED_TEXTS" default:"10000" desc:"received texts kept per client for the test control API (older ones are dropped, counts stay exact)"`

	// Now is the canister's clock for timers and control-API sends; calls carry their own time.
	// Tests inject a fake clock. Nil means time.Now.
	Now    func() time.Time `ignored:"true"`
	Logger *slog.Logger     `ignored:"true"`
}

// DefaultConfig returns the defaults that the envconfig tags declare.
func DefaultConfig() Config { return config.MustDefaults[Config]() }

// validate applies the CDK's init check (its init traps unless the ack interval exceeds the
// keep-alive timeout) and rejects values that would make the canister misbehave.
func (c *Config) validate() error {
	var errs []error
	if c.KeepAliveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("REPLICA_KEEPALIVE_TIMEOUT must be > 0, got %s", c.KeepAliveTimeout))
	}
	if c.AckInterval <= c.KeepAliveTimeout {
		errs = append(errs, fmt.Errorf("REPLICA_ACK_INTERVAL (%s) must be greater than REPLICA_KEEPALIVE_TIMEOUT (%s), as the CDK's init requires", c.AckInterval, c.KeepAliveTimeout))
	}
	if c.MaxReturnedMessages <= 0 {
		errs = append(errs, fmt.Errorf("REPLICA_MAX_RETURNED_MESSAGES must be > 0, got %d", c.MaxReturnedMessages))
	}
	if c.DeleteBatch <= 0 {
		errs = append(errs, fmt.Errorf("REPLICA_DELETE_BATCH must be > 0, got %d", c.DeleteBatch))
	}
	if c.MaxBurst <= 0 {
		errs = append(errs, fmt.Errorf("REPLICA_MAX_BURST must be > 0, got %d", c.MaxBurst))
	}
	if c.MaxLoggedTexts < 0 {
		errs = append(errs, fmt.Errorf("REPLICA_MAX_LOGGED_TEXTS must be >= 0, got %d", c.MaxLoggedTexts))
	}
	if len(errs) > 0 {
		return fmt.Errorf("wscanister config: %w", errors.Join(errs...))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
