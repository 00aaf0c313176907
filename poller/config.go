package poller

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/aviate-labs/agent-go/principal"

	"github.com/icws/icws/internal/config"
)

// Config configures a poller process. The caller applies the ICWS_ prefix.
type Config struct {
	ID             string        `envconfig:"POLLER_ID" desc:"unique id of this poller process (default: hostname-pid)"`
	Interval       time.Duration `envconfig:"POLL_INTERVAL" default:"100ms" desc:"wait between two ws_get_messages polls of a canister once its queue is drained"`
	Timeout        time.Duration `envconfig:"POLL_TIMEOUT" default:"5s" desc:"timeout of one ws_get_messages query"`
	LeaseTTL       time.Duration `envconfig:"POLL_LEASE_TTL" default:"2s" desc:"lifetime of a canister's poller lease; a standby takes over this long after the active poller dies"`
	Canisters      []string      `envconfig:"CANISTERS" desc:"comma-separated canister ids always polled (empty: only canisters with sessions)"`
	BackoffMin     time.Duration `envconfig:"POLL_BACKOFF_MIN" default:"100ms" desc:"first retry delay after a failed poll"`
	BackoffMax     time.Duration `envconfig:"POLL_BACKOFF_MAX" default:"5s" desc:"largest retry delay after failed polls"`
	Linger         time.Duration `envconfig:"POLL_LINGER" default:"5s" desc:"how long a canister is still polled after its last session is gone"`
	PublishTimeout time.Duration `envconfig:"POLL_PUBLISH_TIMEOUT" default:"5s" desc:"how long to wait for JetStream to acknowledge a batch of published messages"`
	// MaxCertBytes and PublishBatchBytes bound what one ws_get_messages answer costs: every
	// frame carries the answer's certificate, so a canister could multiply a large one by its
	// message count.
	MaxCertBytes      config.Bytes  `envconfig:"POLL_MAX_CERT_BYTES" default:"64KiB" desc:"largest certificate a ws_get_messages answer may carry (an IC certificate with its subnet delegation is a few KiB); a larger one fails the poll as an undecodable answer"`
	PublishBatchBytes config.Bytes  `envconfig:"POLL_PUBLISH_BATCH_BYTES" default:"8MiB" desc:"frames of one poll held in memory and in flight to JetStream at once; a poll whose frames exceed it is published in parts, in order"`
	RunAnswers        int           `envconfig:"POLL_RUN_ANSWERS" default:"4" desc:"full ws_get_messages answers of a canister (a backlog) fetched one after the other and stored together: a client's frames of all of them become one ICWS_OUT message, fewer and larger stream messages when many clients share the backlog; 1 stores every answer on its own"`
	RunWait           time.Duration `envconfig:"POLL_RUN_WAIT" default:"10ms" desc:"how long the messages of a run's first answer may wait for the fetches after it (ICWS_POLL_RUN_ANSWERS): a fetch that would end later, judged by the one before, is not started, and one that does is abandoned and asked again by the next poll; where a query takes longer than this (a distant IC), answers are stored one by one"`
	KickGap           time.Duration `envconfig:"POLL_KICK_GAP" default:"1ms" desc:"polls of a canister made at once because a submitter announced an executed call (poll kicks) average at most one per this gap; a kick beyond that waits its turn; 0 polls at once on every kick"`
	KickBurst         int           `envconfig:"POLL_KICK_BURST" default:"4" desc:"poll kicks of a canister served at once, closer than ICWS_POLL_KICK_GAP, before kicks wait their turn"`
	MaxCanisters      int           `envconfig:"MAX_CANISTERS" default:"1000" desc:"canisters with sessions at once (when ICWS_CANISTERS is empty); a session for one more canister is refused with 1013, and pollers poll no more"`
	// FailClose: a canister answering only with permanent errors for this long counts as failed.
	FailClose time.Duration `envconfig:"POLL_FAIL_CLOSE" default:"60s" desc:"how long a canister may answer ws_get_messages with nothing but permanent errors (stopped, missing, trapping, method missing, undecodable) before its sessions are closed (1011) and polling waits for a new session; transient errors are retried for ever"`
	// ReadyWindow: Ready fails when polls have been failing for longer than this.
	ReadyWindow time.Duration `envconfig:"POLL_READY_WINDOW" default:"30s" desc:"readiness fails when every poll has failed for this long"`
}

// maxRunAnswers bounds ICWS_POLL_RUN_ANSWERS: past a few answers a run saves little, and its first
// messages wait for every fetch after them.
const maxRunAnswers = 64

// DefaultConfig returns the defaults the envconfig tags declare (the id is chosen by withDefaults).
func DefaultConfig() Config { return config.MustDefaults[Config]() }

// withDefaults fills zero values with the envconfig defaults, so a Config built in code works too.
// KickGap keeps its zero: there it means "poll at once on every kick".
func (c Config) withDefaults() Config {
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "poller"
		}
		c.ID = h + "-" + strconv.Itoa(os.Getpid())
	}
	d := DefaultConfig()
	def := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	def(&c.Interval, d.Interval)
	def(&c.Timeout, d.Timeout)
	def(&c.LeaseTTL, d.LeaseTTL)
	def(&c.BackoffMin, d.BackoffMin)
	def(&c.BackoffMax, d.BackoffMax)
	def(&c.Linger, d.Linger)
	def(&c.PublishTimeout, d.PublishTimeout)
	def(&c.ReadyWindow, d.ReadyWindow)
	def(&c.FailClose, d.FailClose)
	def(&c.RunWait, d.RunWait)
	if c.MaxCanisters == 0 {
		c.MaxCanisters = d.MaxCanisters
	}
	if c.KickBurst == 0 {
		c.KickBurst = d.KickBurst
	}
	if c.MaxCertBytes == 0 {
		c.MaxCertBytes = d.MaxCertBytes
	}
	if c.PublishBatchBytes == 0 {
		c.PublishBatchBytes = d.PublishBatchBytes
	}
	if c.RunAnswers == 0 {
		c.RunAnswers = d.RunAnswers
	}
	return c
}

// Validate reports what is wrong with the configuration, naming each variable; New refuses the
// same (a command checks it before it starts anything).
func (c Config) Validate() error { return c.withDefaults().validate() }

func (c Config) validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("ICWS_POLL_INTERVAL=%s: must not be negative", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("ICWS_POLL_TIMEOUT=%s: must be positive", c.Timeout)
	case c.LeaseTTL < 200*time.Millisecond:
		return fmt.Errorf("ICWS_POLL_LEASE_TTL=%s: must be at least 200ms", c.LeaseTTL)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("ICWS_POLL_BACKOFF_MIN=%s, ICWS_POLL_BACKOFF_MAX=%s: need 0 < min <= max", c.BackoffMin, c.BackoffMax)
	case c.KickGap < 0 || c.KickGap > c.Interval:
		return fmt.Errorf("ICWS_POLL_KICK_GAP=%s: must be between 0 and ICWS_POLL_INTERVAL (%s)", c.KickGap, c.Interval)
	case c.KickBurst < 1:
		return fmt.Errorf("ICWS_POLL_KICK_BURST=%d: must be at least 1", c.KickBurst)
	case c.Linger < 0:
		return fmt.Errorf("ICWS_POLL_LINGER=%s: must not be negative", c.Linger)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("ICWS_POLL_PUBLISH_TIMEOUT=%s: must be positive", c.PublishTimeout)
	case c.FailClose < 0:
		return fmt.Errorf("ICWS_POLL_FAIL_CLOSE=%s: must be positive", c.FailClose)
	case c.MaxCanisters < 1:
		return fmt.Errorf("ICWS_MAX_CANISTERS=%d: must be at least 1", c.MaxCanisters)
	case c.MaxCertBytes < 4<<10:
		return fmt.Errorf("ICWS_POLL_MAX_CERT_BYTES=%d: must be at least 4KiB", c.MaxCertBytes)
	case c.PublishBatchBytes < 64<<10:
		return fmt.Errorf("ICWS_POLL_PUBLISH_BATCH_BYTES=%d: must be at least 64KiB", c.PublishBatchBytes)
	case c.RunWait < 0:
		return fmt.Errorf("ICWS_POLL_RUN_WAIT=%s: must not be negative", c.RunWait)
	case c.RunAnswers < 1 || c.RunAnswers > maxRunAnswers:
		return fmt.Errorf("ICWS_POLL_RUN_ANSWERS=%d: must be between 1 and %d", c.RunAnswers, maxRunAnswers)
	}
	var errs []error
	for _, s := range c.Canisters {
		if _, err := principal.Decode(s); err != nil {
			errs = append(errs, fmt.Errorf("ICWS_CANISTERS: %q is not a canister id: %w", s, err))
		}
	}
	return errors.Join(errs...)
}
