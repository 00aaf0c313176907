package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/icws/icws/internal/config"
	"github.com/nats-io/nats.go/jetstream"
)

// Topology is the shape of the streams and buckets: replay window, de-duplication, replicas and the
// number of ICWS_IN partitions. Every process of a deployment must agree on it; Ensure writes it
// and Open reads the partition count back from the stream, so roles never guess.
type Topology struct {
	Partitions           int           `envconfig:"PARTITIONS" default:"16" desc:"number of ICWS_IN partitions; the unit of work a submitter owns (1-1024)"`
	Replicas             int           `envconfig:"STREAM_REPLICAS" default:"1" desc:"replicas of every stream and bucket (1, 3 or 5; 3 on a NATS cluster)"`
	InMaxAge             time.Duration `envconfig:"IN_MAX_AGE" default:"10m" desc:"how long client envelopes stay in ICWS_IN (must exceed the ingress expiry, 5 min)"`
	OutMaxAge            time.Duration `envconfig:"REPLAY_MAX_AGE" default:"10m" desc:"replay window by age: how long canister messages stay in ICWS_OUT"`
	OutMaxMsgsPerSubject int64         `envconfig:"REPLAY_MAX_MESSAGES" default:"10000" desc:"replay window by count: stream messages kept per client in ICWS_OUT (each one canister message, or a client's several of one poll)"`
	DuplicateWindow      time.Duration `envconfig:"DUPLICATE_WINDOW" default:"6m" desc:"JetStream de-duplication window of ICWS_IN and ICWS_OUT; at least the canister's message retention"`
	MaxMessageBytes      int32         `envconfig:"STREAM_MAX_MESSAGE_BYTES" default:"4194304" desc:"largest message a stream accepts (bytes); at least 3.5 MiB so any IC reply fits"`
	InMaxBytes           config.Bytes  `envconfig:"IN_MAX_BYTES" default:"256MiB" desc:"byte limit of ICWS_IN; when full, new client envelopes are refused (1013) and nothing stored is dropped"`
	OutMaxBytes          config.Bytes  `envconfig:"OUT_MAX_BYTES" default:"512MiB" desc:"byte limit of ICWS_OUT; when full, pollers wait (the canister keeps its messages) and nothing stored is dropped"`
	SessionTombstoneTTL  time.Duration `envconfig:"SESSION_TOMBSTONE_TTL" default:"1m" desc:"how long the marker an ended session leaves in the sessions bucket stays, for watchers that are behind (at least 1s); without an end, every session ever opened would leave one for good"`
	Repartition          bool          `envconfig:"STREAM_REPARTITION" default:"false" desc:"allow a different ICWS_PARTITIONS than the existing ICWS_IN stream records (stop every edge and submitter first: processes that disagree lose envelopes)"`
	// EnsureStreams is read by the processes that start roles, not by Ensure: a role whose NATS user
	// may not manage streams leaves that to another process and waits for the streams to exist.
	EnsureStreams bool `envconfig:"ENSURE_STREAMS" default:"true" desc:"create or update the streams and buckets at start (the NATS user needs JetStream stream-management permissions); false: wait until another process has created them and use them as they are"`
}

// Validate checks the ranges the roles rely on.
func (t Topology) Validate() error {
	switch {
	case t.Partitions < 1 || t.Partitions > 1024:
		return fmt.Errorf("ICWS_PARTITIONS=%d: must be between 1 and 1024", t.Partitions)
	case t.Replicas != 1 && t.Replicas != 3 && t.Replicas != 5:
		return fmt.Errorf("ICWS_STREAM_REPLICAS=%d: must be 1, 3 or 5", t.Replicas)
	case t.InMaxAge < 6*time.Minute:
		return fmt.Errorf("ICWS_IN_MAX_AGE=%s: must be at least 6m (ingress expiry is 5 min)", t.InMaxAge)
	case t.OutMaxAge <= 0:
		return fmt.Errorf("ICWS_REPLAY_MAX_AGE=%s: must be positive", t.OutMaxAge)
	case t.OutMaxMsgsPerSubject < 1:
		return fmt.Errorf("ICWS_REPLAY_MAX_MESSAGES=%d: must be at least 1", t.OutMaxMsgsPerSubject)
	case t.DuplicateWindow <= 0 || t.DuplicateWindow > t.OutMaxAge || t.DuplicateWindow > t.InMaxAge:
		return fmt.Errorf("ICWS_DUPLICATE_WINDOW=%s: must be positive and not longer than ICWS_REPLAY_MAX_AGE and ICWS_IN_MAX_AGE", t.DuplicateWindow)
	case t.InMaxBytes < config.Bytes(t.MaxMessageBytes)*4 || t.OutMaxBytes < config.Bytes(t.MaxMessageBytes)*4:
		return fmt.Errorf("ICWS_IN_MAX_BYTES=%d, ICWS_OUT_MAX_BYTES=%d: each must hold at least 4 messages of ICWS_STREAM_MAX_MESSAGE_BYTES (%d)", t.InMaxBytes, t.OutMaxBytes, t.MaxMessageBytes)
	case t.SessionTombstoneTTL < time.Second:
		return fmt.Errorf("ICWS_SESSION_TOMBSTONE_TTL=%s: must be at least 1s", t.SessionTombstoneTTL)
	case t.MaxMessageBytes < minMaxMessageBytes:
		return fmt.Errorf("ICWS_STREAM_MAX_MESSAGE_BYTES=%d: must be at least %d (a canister message frame carries an IC reply's certificate and tree)", t.MaxMessageBytes, minMaxMessageBytes)
	}
	return nil
}

// DefaultTopology is the single-host default: the values the envconfig tags declare.
func DefaultTopology() Topology { return config.MustDefaults[Topology]() }

const metadataPartitions = "icws.partitions"

// minMaxMessageBytes keeps room for the largest frame a poller stores: an IC query reply is at most
// about 3 MiB, and its certificate and tree travel with every message.
const minMaxMessageBytes = 3584 * 1024

// ErrPartitionsMismatch means the ICWS_IN stream was created with another partition count.
var ErrPartitionsMismatch = errors.New("partition count differs from the existing ICWS_IN stream")

func streamConfigs(t Topology) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamIn,
			Description: "icws: client envelopes and close requests, per client in order",
			Subjects:    []string{SubjectInAll},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.InMaxAge,
			Duplicates:  t.DuplicateWindow,
			Replicas:    t.Replicas,
			MaxMsgSize:  t.MaxMessageBytes,
			MaxBytes:    int64(t.InMaxBytes),
			Discard:     jetstream.DiscardNew, // a full stream refuses new envelopes, never drops stored ones
			AllowDirect: true,
			Metadata:    map[string]string{metadataPartitions: strconv.Itoa(t.Partitions)},
		},
		{
			Name:              StreamOut,
			Description:       "icws: certified canister messages, per client, the replay window",
			Subjects:          []string{SubjectOutAll},
			Storage:           jetstream.FileStorage,
			Retention:         jetstream.LimitsPolicy,
			MaxAge:            t.OutMaxAge,
			MaxMsgsPerSubject: t.OutMaxMsgsPerSubject,
			Duplicates:        t.DuplicateWindow,
			Replicas:          t.Replicas,
			MaxMsgSize:        t.MaxMessageBytes,
			MaxBytes:          int64(t.OutMaxBytes),
			// A full stream refuses new messages (the poller retries; the canister still holds
			// them) instead of dropping stored ones a client may still resume from. The
			// per-client window (MaxMsgsPerSubject) still drops a client's oldest messages.
			Discard:     jetstream.DiscardNew,
			AllowDirect: true,
			RePublish:   &jetstream.RePublish{Source: SubjectOutAll, Destination: subjectLivePrefix + ">"},
		},
	}
}

func bucketConfigs(t Topology) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketSessions, Description: "icws: client sessions", History: 1, Storage: jetstream.FileStorage, Replicas: t.Replicas,
			LimitMarkerTTL: t.SessionTombstoneTTL},
		{Bucket: BucketCursors, Description: "icws: canister queue cursors", History: 1, Storage: jetstream.FileStorage, Replicas: t.Replicas},
		{Bucket: BucketLeases, Description: "icws: poller and submitter leases", History: 1, Storage: jetstream.FileStorage, Replicas: t.Replicas},
	}
}

// Ensure creates every stream and bucket, or updates them to the topology. It is idempotent.
// A change the server cannot apply in place (for example the replica count on some versions) is
// reported with the stream's name.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if !t.Repartition {
		if err := checkPartitions(ctx, js, t.Partitions); err != nil {
			return err
		}
	}
	// All at once: on a cluster that is still forming, each replicated stream can take the
	// servers seconds to place and elect, and one after the other they add up.
	var creates []func(context.Context) error
	for _, cfg := range streamConfigs(t) {
		creates = append(creates, func(ctx context.Context) error {
			if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
				return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
			}
			return nil
		})
	}
	for _, cfg := range bucketConfigs(t) {
		creates = append(creates, func(ctx context.Context) error {
			if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
				return fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
			}
			return nil
		})
	}
	errs := make([]error, len(creates))
	var wg sync.WaitGroup
	for i, create := range creates {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, ensureRequestTimeout)
			defer cancel()
			errs[i] = create(rctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ensureRequestTimeout bounds each creation request of Ensure. On a cluster that is still forming,
// with several processes creating the same streams at once, a request can go unanswered although
// asking again succeeds at once; creation is idempotent, so the caller retries rather than waiting
// out a long deadline once per stream.
const ensureRequestTimeout = 10 * time.Second

// checkPartitions refuses a partition count that differs from the existing stream's: edges and
// submitters that disagree on it route envelopes to partitions nobody consumes.
func checkPartitions(ctx context.Context, js jetstream.JetStream, want int) error {
	ctx, cancel := context.WithTimeout(ctx, ensureRequestTimeout)
	defer cancel()
	s, err := js.Stream(ctx, StreamIn)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", StreamIn, err)
	}
	have, err := strconv.Atoi(s.CachedInfo().Config.Metadata[metadataPartitions])
	if err != nil || have == want {
		return nil // a stream without the record is adopted
	}
	return fmt.Errorf("ICWS_PARTITIONS=%d: %w (%d); use the same value everywhere, or stop every edge and submitter and set ICWS_STREAM_REPARTITION=true once", want, ErrPartitionsMismatch, have)
}

// Handles are the streams and buckets a role works with.
type Handles struct {
	In, Out                   jetstream.Stream
	Sessions, Cursors, Leases jetstream.KeyValue
	// Partitions is the ICWS_IN partition count recorded by Ensure.
	Partitions int
}

// ErrNotEnsured means the streams or buckets do not exist yet: some process must run Ensure first.
var ErrNotEnsured = errors.New("icws streams and buckets are missing")

// Open looks up the streams and buckets created by Ensure.
func Open(ctx context.Context, js jetstream.JetStream) (*Handles, error) {
	var h Handles
	var err error
	if h.In, err = js.Stream(ctx, StreamIn); err != nil {
		return nil, fmt.Errorf("open stream %s: %w (%w)", StreamIn, err, ErrNotEnsured)
	}
	if h.Out, err = js.Stream(ctx, StreamOut); err != nil {
		return nil, fmt.Errorf("open stream %s: %w (%w)", StreamOut, err, ErrNotEnsured)
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{BucketSessions, &h.Sessions}, {BucketCursors, &h.Cursors}, {BucketLeases, &h.Leases}} {
		if *b.kv, err = js.KeyValue(ctx, b.name); err != nil {
			return nil, fmt.Errorf("open bucket %s: %w (%w)", b.name, err, ErrNotEnsured)
		}
	}
	p, err := strconv.Atoi(h.In.CachedInfo().Config.Metadata[metadataPartitions])
	if err != nil || p < 1 {
		return nil, fmt.Errorf("stream %s has no valid %s metadata: %w", StreamIn, metadataPartitions, ErrNotEnsured)
	}
	h.Partitions = p
	return &h, nil
}
