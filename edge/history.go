package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/icws/icws/bus"
	"github.com/nats-io/nats.go"
)

// directGetBatch is how many messages one batched direct get asks for (nats-server ≥ 2.11).
const directGetBatch = 256

type directGetRequest struct {
	Seq      uint64 `json:"seq"`
	NextFor  string `json:"next_by_subj"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

var errStopRead = errors.New("stop")

// readSubject calls fn for every message stored on subject in ICWS_OUT from stream sequence
// from on, in stream order, using batched direct gets: no consumer is created, so a reconnect
// storm costs requests, not consumer objects. fn may return errStopRead to end early.
func (e *Edge) readSubject(ctx context.Context, subject string, from uint64, fn func(streamSeq uint64, hdr nats.Header, data []byte) error) error {
	if f := e.testReadErr.Load(); f != nil {
		if err := (*f)(); err != nil {
			return err
		}
	}
	inbox := e.nc.NewRespInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("direct get: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	api := "$JS.API.DIRECT.GET." + bus.StreamOut
	if from == 0 {
		from = 1
	}
	for {
		req, _ := json.Marshal(directGetRequest{Seq: from, NextFor: subject, Batch: directGetBatch, MaxBytes: 4 << 20})
		if err := e.nc.PublishRequest(api, inbox, req); err != nil {
			return fmt.Errorf("direct get: %w", err)
		}
		for {
			wait := 5 * time.Second
			if dl, ok := ctx.Deadline(); ok {
				wait = time.Until(dl)
			}
			m, err := sub.NextMsg(wait)
			if err != nil {
				return fmt.Errorf("direct get %s from %d: %w", subject, from, err)
			}
			switch m.Header.Get("Status") {
			case "404":
				return nil // nothing at or after from
			case "204": // end of batch
				if m.Header.Get("Nats-Num-Pending") == "0" {
					return nil
				}
				goto nextBatch
			case "":
			default:
				return fmt.Errorf("direct get %s: status %s %s", subject, m.Header.Get("Status"), m.Header.Get("Description"))
			}
			seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
			if err != nil {
				return fmt.Errorf("direct get %s: bad Nats-Sequence", subject)
			}
			from = seq + 1
			if err := fn(seq, m.Header, m.Data); err != nil {
				if errors.Is(err, errStopRead) {
					return nil
				}
				return err
			}
		}
	nextBatch:
	}
}

// highestStoredSeq is the highest client sequence number stored on subject from stream sequence
// from on, reading until it finds one of at least enough.
func (e *Edge) highestStoredSeq(ctx context.Context, subject string, from, enough uint64) (uint64, error) {
	var top uint64
	err := e.readSubject(ctx, subject, from, func(_ uint64, hdr nats.Header, data []byte) error {
		if t, ok := topSeqOf(hdr, data); ok && t > top {
			top = t
		}
		if top >= enough {
			return errStopRead
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return top, nil
}
