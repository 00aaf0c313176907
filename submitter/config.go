package submitter

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/icws/icws/internal/config"
)

// Config is the submitter's configuration; the caller applies the ICWS prefix.
type Config struct {
	ID            string        `envconfig:"SUBMITTER_ID" desc:"unique id of this submitter process (default: hostname-pid)"`
	SettleDelay   time.Duration `envconfig:"SUBMIT_SETTLE_DELAY" default:"2s" desc:"wait after a 202 (not certified in time) before the client's next envelope"`
	RetryMin      time.Duration `envconfig:"SUBMIT_RETRY_MIN" default:"100ms" desc:"first back-off after a retryable IC error; doubles up to SUBMIT_RETRY_MAX"`
	RetryMax      time.Duration `envconfig:"SUBMIT_RETRY_MAX" default:"5s" desc:"longest back-off between retries of the same envelope"`
	CallTimeout   time.Duration `envconfig:"SUBMIT_CALL_TIMEOUT" default:"30s" desc:"timeout of one IC call attempt"`
	LeaseTTL      time.Duration `envconfig:"SUBMIT_LEASE_TTL" default:"3s" desc:"lifetime of a partition lease; a dead submitter's partitions move after about this long"`
	MaxInFlight   int           `envconfig:"SUBMIT_MAX_CLIENTS_IN_FLIGHT" default:"256" desc:"clients relayed in parallel per process"`
	MaxPending    int           `envconfig:"SUBMIT_MAX_PENDING" default:"4096" desc:"unacknowledged ICWS_IN messages per partition held by this process (JetStream MaxAckPending)"`
	AckWait       time.Duration `envconfig:"SUBMIT_ACK_WAIT" default:"10m" desc:"JetStream AckWait of partition consumers; must exceed the time a client's backlog may take"`
	PullHeartbeat time.Duration `envconfig:"SUBMIT_PULL_HEARTBEAT" default:"1s" desc:"while a partition has nothing to deliver, its consumer's NATS server sends a heartbeat this often; after two missing ones the submitter asks for messages again (a request lost while the consumer's leader changed would otherwise stall the partition for 30 s); each request lasts 5 heartbeats"`
	CloseRetryFor time.Duration `envconfig:"SUBMIT_CLOSE_RETRY_FOR" default:"1m" desc:"how long a ws_close call is retried on transport errors"`
	ICGiveUp      time.Duration `envconfig:"SUBMIT_IC_GIVE_UP" default:"3s" desc:"how long the IC may leave this submitter's status probes (one every third of this, three failing in a row) unanswered before it hands its partitions to other submitters and stops announcing itself, until the IC answers again; 0 never gives up"`
	DrainTimeout  time.Duration `envconfig:"SUBMIT_DRAIN_TIMEOUT" default:"10s" desc:"on shutdown or hand-over, how long in-flight envelopes may finish"`
}

// DefaultConfig returns the defaults the envconfig tags declare (the id is chosen by validate).
func DefaultConfig() Config { return config.MustDefaults[Config]() }

// idPattern keeps ids usable inside KV keys and consumer names.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$`)

// Validate reports what is wrong with the configuration, naming each variable; New refuses the
// same (a command checks it before it starts anything).
func (c Config) Validate() error { return c.validate() }

func (c *Config) validate() error {
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "submitter"
		}
		c.ID = sanitizeID(h) + "-" + strconv.Itoa(os.Getpid())
	}
	switch {
	case !idPattern.MatchString(c.ID):
		return fmt.Errorf("ICWS_SUBMITTER_ID=%q: only letters, digits, '-', '_' and '.' (max 100)", c.ID)
	case c.SettleDelay < 0:
		return fmt.Errorf("ICWS_SUBMIT_SETTLE_DELAY=%s: must not be negative", c.SettleDelay)
	case c.RetryMin <= 0:
		return fmt.Errorf("ICWS_SUBMIT_RETRY_MIN=%s: must be positive", c.RetryMin)
	case c.RetryMax < c.RetryMin:
		return fmt.Errorf("ICWS_SUBMIT_RETRY_MAX=%s: must be at least ICWS_SUBMIT_RETRY_MIN (%s)", c.RetryMax, c.RetryMin)
	case c.CallTimeout <= 0:
		return fmt.Errorf("ICWS_SUBMIT_CALL_TIMEOUT=%s: must be positive", c.CallTimeout)
	case c.ICGiveUp != 0 && c.ICGiveUp < 300*time.Millisecond:
		return fmt.Errorf("ICWS_SUBMIT_IC_GIVE_UP=%s: must be 0 (never) or at least 300ms", c.ICGiveUp)
	case c.LeaseTTL < 300*time.Millisecond:
		return fmt.Errorf("ICWS_SUBMIT_LEASE_TTL=%s: must be at least 300ms", c.LeaseTTL)
	case c.MaxInFlight < 1:
		return fmt.Errorf("ICWS_SUBMIT_MAX_CLIENTS_IN_FLIGHT=%d: must be at least 1", c.MaxInFlight)
	case c.MaxPending < 1:
		return fmt.Errorf("ICWS_SUBMIT_MAX_PENDING=%d: must be at least 1", c.MaxPending)
	case c.AckWait < time.Second:
		return fmt.Errorf("ICWS_SUBMIT_ACK_WAIT=%s: must be at least 1s", c.AckWait)
	case c.PullHeartbeat < 500*time.Millisecond || c.PullHeartbeat > 30*time.Second:
		return fmt.Errorf("ICWS_SUBMIT_PULL_HEARTBEAT=%s: must be between 500ms and 30s (JetStream's range)", c.PullHeartbeat)
	case c.CloseRetryFor < 0:
		return fmt.Errorf("ICWS_SUBMIT_CLOSE_RETRY_FOR=%s: must not be negative", c.CloseRetryFor)
	case c.DrainTimeout <= 0:
		return fmt.Errorf("ICWS_SUBMIT_DRAIN_TIMEOUT=%s: must be positive", c.DrainTimeout)
	}
	return nil
}

func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 80 {
		b = b[:80]
	}
	return string(b)
}

// rebalanceEvery is how often the group reconsiders its fair share of the partitions (each
// lease renews itself on the bus.Lease policy).
func (c *Config) rebalanceEvery() time.Duration { return c.LeaseTTL / 3 }
